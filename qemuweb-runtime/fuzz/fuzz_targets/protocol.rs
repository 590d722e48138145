//! The worker's request decoder and session checks on arbitrary input, one request a line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qemuweb_runtime::protocol::{decode_request_json, ErrorCode, Session};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut session = Session::new();
    for line in text.split('\n') {
        match decode_request_json(line) {
            Ok(request) => {
                assert!(request.validate().is_ok(), "decoded but invalid: {request:?}");
                let again = serde_json::to_string(&request).expect("a request serializes");
                let back = decode_request_json(&again)
                    .unwrap_or_else(|e| panic!("{again} does not decode again: {:?}", e.error));
                assert_eq!(back, request, "{again}");
                // Any order of commands ends in Ok or a typed refusal, never a panic.
                let _ = session.check(&request.command);
            }
            Err(e) => assert!(
                matches!(e.error.code(), ErrorCode::Malformed | ErrorCode::UnknownCommand),
                "{:?}",
                e.error
            ),
        }
    }
});
