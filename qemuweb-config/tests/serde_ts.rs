//! The serialized (JSON / JavaScript) form of the types, and the TypeScript declarations
//! tsify generates for them.

use qemuweb_config::*;
use serde_json::json;
use tsify::Tsify;

#[test]
fn profile_json_uses_reference_names() {
    let profile = profile_by_id(LINUX_AARCH64_VIRT_NOGRAPHIC).unwrap();
    let value = serde_json::to_value(&profile).unwrap();
    assert_eq!(value["memoryMiB"], 512);
    assert_eq!(value["maxMemoryMiB"], 8192);
    assert_eq!(value["supportsGraphics"], false);
    assert_eq!(value["requiresKernel"], false);
    assert_eq!(value["arch"], "aarch64");
    assert_eq!(value["blockSizeBytes"], 65536);
    assert_eq!(
        value["devices"],
        json!({"diskInterface": "virtio-blk", "net": "user", "rng": true, "serial": "stdio", "usb": false, "keyboard": false})
    );
    let back: VmProfile = serde_json::from_value(value).unwrap();
    assert_eq!(back, profile);
}

#[test]
fn all_default_profiles_round_trip() {
    for profile in default_profiles() {
        let text = serde_json::to_string(&profile).unwrap();
        assert_eq!(serde_json::from_str::<VmProfile>(&text).unwrap(), profile);
    }
}

/// The custom profile of the reference README, in this crate's shape, built and used.
#[test]
fn custom_profile_from_json() {
    let mut set = ProfileSet::with_defaults();
    set.insert_json(
        r#"{
            "id": "my-custom-profile", "name": "My Custom VM", "arch": "x86_64",
            "machine": "pc", "cpu": "qemu64", "memoryMiB": 1024, "smp": 2,
            "supportsGraphics": false, "defaultArgs": ["-enable-kvm"], "requiresKernel": false,
            "maxMemoryMiB": 4096,
            "devices": { "diskInterface": "virtio-blk", "net": "user", "serial": "stdio" }
        }"#,
    )
    .unwrap();
    let profile = set.get("my-custom-profile").unwrap();
    assert_eq!(profile.description, "");
    assert!(!profile.devices.rng && !profile.devices.usb);
    let inputs: VmInputs = serde_json::from_value(json!({
        "disk": { "source": { "kind": "file", "path": "/vm/disk.qcow2" } }
    }))
    .unwrap();
    let overrides: VmOverrides = serde_json::from_value(json!({ "memoryMiB": 2048 })).unwrap();
    let target: Target = serde_json::from_value(json!({
        "kind": "native", "accelerator": "tcg",
        "host": { "os": "linux", "kvm": false }, "display": { "kind": "none" }
    }))
    .unwrap();
    let r = build_qemu_args(profile, &inputs, Some(&overrides), &target);
    assert!(r.is_ok(), "{:?}", r.errors);
    assert!(r.args.windows(2).any(|w| w == ["-m", "2048"]));
    assert!(r.args.windows(2).any(|w| w == ["-smp", "2"]));
    assert!(!r.args.contains(&"-enable-kvm".to_string()));
    assert_eq!(r.warning_codes(), vec![IssueCode::AcceleratorArgDropped]);
    let value = serde_json::to_value(&r).unwrap();
    assert_eq!(value["binary"], "qemu-system-x86_64");
    assert_eq!(value["arch"], "x86_64");
    assert_eq!(value["filesToMount"][0]["path"], "/vm/disk.qcow2");
    assert_eq!(value["filesToMount"][0]["role"], "disk");
    assert_eq!(value["warnings"][0]["code"], "accelerator-arg-dropped");
}

#[test]
fn targets_and_sources_json() {
    let browser = Target::Browser(BrowserTarget::qemu_wasm_i386());
    assert_eq!(
        serde_json::to_value(&browser).unwrap(),
        json!({"kind": "browser", "archs": ["i386"], "maxMemoryMiB": 1024, "userNet": false,
               "display": false, "mountDir": "/mnt", "firmwareDir": "/firmware",
               "memory64": false})
    );
    // A target written before `memory64` existed reads as a wasm32 build.
    let old: Target = serde_json::from_value(json!({"kind": "browser", "archs": ["i386"],
        "maxMemoryMiB": 1024, "userNet": false, "display": false, "mountDir": "/mnt"}))
    .unwrap();
    assert!(matches!(
        old,
        Target::Browser(BrowserTarget {
            memory64: false,
            ..
        })
    ));
    let native = Target::Native(NativeTarget {
        display: NativeDisplay::Vnc { display: 1 },
        ..NativeTarget::new(
            Accelerator::Kvm,
            HostCaps {
                arch: Some(Arch::X86_64),
                os: HostOs::Linux,
                kvm: true,
            },
        )
    });
    let value = serde_json::to_value(&native).unwrap();
    assert_eq!(
        value,
        json!({"kind": "native", "accelerator": "kvm",
               "host": {"arch": "x86_64", "os": "linux", "kvm": true},
               "display": {"kind": "vnc", "display": 1}})
    );
    assert_eq!(serde_json::from_value::<Target>(value).unwrap(), native);
    assert_eq!(
        serde_json::to_value(ImageSource::url("https://x.test/a")).unwrap(),
        json!({"kind": "url", "url": "https://x.test/a"})
    );
    let disk: DiskInput = serde_json::from_value(json!({
        "source": {"kind": "url", "url": "https://x.test/a.qcow2"}, "format": "qcow2", "readOnly": true
    }))
    .unwrap();
    assert_eq!(
        disk,
        DiskInput::new(
            ImageSource::url("https://x.test/a.qcow2"),
            DiskFormat::Qcow2
        )
        .read_only()
    );
    assert!(serde_json::from_value::<Arch>(json!("riscv64")).is_err());
}

/// What TypeScript sees.
#[test]
fn typescript_declarations() {
    let decl = VmProfile::DECL;
    for field in [
        "id: string;",
        "arch: Arch;",
        "cpu?: string;",
        "memoryMiB: number;",
        "smp: number;",
        "supportsGraphics: boolean;",
        "defaultArgs?: string[];",
        "requiresKernel: boolean;",
        "devices: VmDevices;",
        "blockSizeBytes?: number;",
        "maxMemoryMiB?: number;",
    ] {
        assert!(decl.contains(field), "VmProfile lacks {field}:\n{decl}");
    }
    assert!(
        Arch::DECL.contains(r#"export type Arch = "x86_64" | "aarch64" | "i386";"#),
        "{}",
        Arch::DECL
    );
    assert!(DiskInterface::DECL.contains(r#""virtio-blk" | "ide" | "scsi""#));
    assert!(ImageSource::DECL
        .contains(r#"{ kind: "file"; path: string } | { kind: "url"; url: string }"#));
    assert!(Target::DECL.contains(
        r#"({ kind: "browser" } & BrowserTarget) | ({ kind: "native" } & NativeTarget)"#
    ));
    for field in [
        "binary: string;",
        "args: string[];",
        "arch: Arch;",
        "filesToMount: FileMountInfo[];",
        "warnings: Issue[];",
        "errors: Issue[];",
    ] {
        assert!(
            QemuArgsResult::DECL.contains(field),
            "QemuArgsResult lacks {field}"
        );
    }
    for field in [
        "disk?: DiskInput;",
        "kernel?: ImageSource;",
        "initrd?: ImageSource;",
        "kernelCmdline?: string;",
        "additionalDisks?: DiskInput[];",
    ] {
        assert!(VmInputs::DECL.contains(field), "VmInputs lacks {field}");
    }
    assert!(VmOverrides::DECL.contains("memoryMiB?: number;"));
    assert!(IssueCode::DECL.contains(r#""kernel-required""#));
}
