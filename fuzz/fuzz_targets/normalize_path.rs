//! Normalization never panics, is idempotent, and never leaves a dot-segment or `//`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(n) = varco::routes::normalize_path(s) {
        let again = varco::routes::normalize_path(&n).expect("normal form must normalize");
        assert_eq!(again, n);
        assert!(!n.contains("//"));
        assert!(!n.split('/').any(|seg| seg == "." || seg == ".."));
    }
});
