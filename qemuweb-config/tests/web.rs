//! The wasm-bindgen exports, run on wasm32 (`wasm-bindgen-test-runner`, in Node):
//! JavaScript objects in the reference design's shape go in, and come back out.
#![cfg(target_arch = "wasm32")]

use js_sys::JSON;
use qemuweb_config::*;
use tsify::Ts;
use wasm_bindgen::JsValue;
use wasm_bindgen_test::wasm_bindgen_test;

fn js(json: &str) -> JsValue {
    JSON::parse(json).expect("valid JSON")
}

fn json_of(value: &JsValue) -> serde_json::Value {
    serde_json::from_str(&String::from(JSON::stringify(value).unwrap())).unwrap()
}

/// The i386 profile and a disk from a URL, as JavaScript objects.
fn i386_with_url_disk() -> (Ts<VmProfile>, Ts<VmInputs>) {
    let profile = Ts::new_unchecked(js(&serde_json::to_string(
        &profile_by_id(LINUX_I386_PC_NOGRAPHIC).unwrap(),
    )
    .unwrap()));
    let inputs = Ts::new_unchecked(js(
        r#"{"disk": {"source": {"kind": "url", "url": "https://example.test/g.qcow2"}}}"#,
    ));
    (profile, inputs)
}

#[wasm_bindgen_test]
fn build_from_javascript_objects() {
    let (profile, inputs) = i386_with_url_disk();
    let overrides = Some(Ts::new_unchecked(js(
        r#"{"memoryMiB": 128, "extraArgs": ["-enable-kvm"]}"#,
    )));
    let target = Ts::new_unchecked(js(&serde_json::to_string(&Target::Browser(
        BrowserTarget::qemu_wasm_i386(),
    ))
    .unwrap()));
    let result = build_qemu_args_js(profile, inputs, overrides, target).unwrap();
    let value = json_of(&result.js_value());
    assert_eq!(value["binary"], "qemu-system-i386");
    assert_eq!(value["filesToMount"][0]["path"], "/mnt/disk0.qcow2");
    assert_eq!(value["filesToMount"][0]["source"]["kind"], "url");
    assert_eq!(value["warnings"][0]["code"], "user-net-unavailable");
    assert_eq!(value["warnings"][1]["code"], "host-only-arg-dropped");
    assert_eq!(value["errors"], serde_json::json!([]));
    let rust: QemuArgsResult = result.to_rust().unwrap();
    assert!(rust.args.windows(2).any(|w| w == ["-m", "128"]));
    assert!(!rust.args.contains(&"-enable-kvm".to_string()));
}

#[wasm_bindgen_test]
fn errors_come_back_as_data() {
    let profile = Ts::new_unchecked(js(&serde_json::to_string(
        &profile_by_id(LINUX_X86_64_PC_NOGRAPHIC).unwrap(),
    )
    .unwrap()));
    let target = Ts::new_unchecked(js(&serde_json::to_string(&Target::Browser(
        BrowserTarget::qemu_wasm_i386(),
    ))
    .unwrap()));
    let result = build_qemu_args_js(profile, Ts::new_unchecked(js("{}")), None, target).unwrap();
    let value = json_of(&result.js_value());
    assert_eq!(value["args"], serde_json::json!([]));
    assert_eq!(value["errors"][0]["code"], "arch-unsupported");
    assert_eq!(value["errors"][1]["code"], "nothing-to-boot");
}

#[wasm_bindgen_test]
fn malformed_input_is_an_error_not_a_trap() {
    let target = Ts::new_unchecked(js(r#"{"kind": "browser"}"#));
    let profile = Ts::new_unchecked(js(r#"{"id": 1}"#));
    assert!(build_qemu_args_js(profile, Ts::new_unchecked(js("{}")), None, target).is_err());
}

#[wasm_bindgen_test]
fn default_profiles_for_javascript() {
    let profiles = default_profiles_js().unwrap();
    assert_eq!(profiles.len(), 7);
    let first = json_of(&profiles[0].js_value());
    assert_eq!(first["id"], "linux-x86_64-pc-nographic");
    assert_eq!(first["memoryMiB"], 512);
    assert_eq!(first["devices"]["diskInterface"], "virtio-blk");
}

#[wasm_bindgen_test]
fn networks_for_javascript() {
    let networks = default_networks_js().unwrap();
    let ids: Vec<_> = networks
        .iter()
        .map(|n| json_of(&n.js_value())["id"].clone())
        .collect();
    assert_eq!(ids, ["default", "isolated"]);
    let default = json_of(&networks[0].js_value());
    assert_eq!(default["cidr"], "10.0.2.0/24");
    assert_eq!(default["dhcp"]["rangeStart"], "10.0.2.15");
    assert_eq!(default["limits"]["maxFrameBytes"], 1514);
    // NICs on named networks come in through the overrides, in camelCase.
    let (profile, inputs) = i386_with_url_disk();
    let overrides = Some(Ts::new_unchecked(js(
        r#"{"networks": [{"network": "lan", "model": "virtio-net", "mac": "52:54:00:00:00:07"}]}"#,
    )));
    let target = Ts::new_unchecked(js(
        r#"{"kind": "browser", "archs": ["i386"], "maxMemoryMiB": 1024, "userNet": false,
            "netdev": true, "display": false, "mountDir": "/mnt"}"#,
    ));
    let result = build_qemu_args_js(profile, inputs, overrides, target).unwrap();
    let rust: QemuArgsResult = result.to_rust().unwrap();
    assert!(
        rust.errors.is_empty() && rust.warnings.is_empty(),
        "{rust:?}"
    );
    assert!(rust.args.windows(2).any(|w| w
        == [
            "-device",
            "virtio-net-pci,netdev=net0,mac=52:54:00:00:00:07,romfile="
        ]));
}
