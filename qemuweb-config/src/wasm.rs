//! wasm-bindgen exports for JavaScript and TypeScript.

use tsify::{Ts, Tsify};
use wasm_bindgen::prelude::*;

use crate::{QemuArgsResult, Target, VirtualNetwork, VmInputs, VmOverrides, VmProfile};

/// `buildQemuArgs(profile, inputs, overrides, target)`: see [`crate::build_qemu_args`].
///
/// Throws if an argument does not have the expected shape.
#[wasm_bindgen(js_name = buildQemuArgs)]
pub fn build_qemu_args_js(
    profile: Ts<VmProfile>,
    inputs: Ts<VmInputs>,
    overrides: Option<Ts<VmOverrides>>,
    target: Ts<Target>,
) -> Result<Ts<QemuArgsResult>, JsError> {
    let profile = profile.to_rust()?;
    let inputs = inputs.to_rust()?;
    let overrides = overrides.map(|o| o.to_rust()).transpose()?;
    let target = target.to_rust()?;
    Ok(crate::build_qemu_args(&profile, &inputs, overrides.as_ref(), &target).into_ts()?)
}

/// `defaultProfiles()`: see [`crate::default_profiles`].
#[wasm_bindgen(js_name = defaultProfiles)]
pub fn default_profiles_js() -> Result<Vec<Ts<VmProfile>>, JsError> {
    crate::default_profiles()
        .iter()
        .map(|p| p.into_ts().map_err(JsError::from))
        .collect()
}

/// `defaultNetworks()`: see [`crate::default_networks`].
#[wasm_bindgen(js_name = defaultNetworks)]
pub fn default_networks_js() -> Result<Vec<Ts<VirtualNetwork>>, JsError> {
    crate::default_networks()
        .iter()
        .map(|n| n.into_ts().map_err(JsError::from))
        .collect()
}
