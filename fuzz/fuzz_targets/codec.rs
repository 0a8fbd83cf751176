//! Arbitrary bytes as a stored record: decoding returns a record or a typed error, never panics,
//! and whatever decodes re-encodes to bytes that decode to the same record.
#![no_main]

use customerdb::Record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = Record::from_stored_bytes(data) {
        let again = rec.to_stored_bytes().expect("a decoded record encodes");
        assert_eq!(Record::from_stored_bytes(&again).expect("round trip"), rec);
    }
});
