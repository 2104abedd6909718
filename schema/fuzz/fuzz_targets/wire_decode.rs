//! Any bytes from the network: `decode` returns an error or a message,
//! never panics, never allocates past its limits (libFuzzer's -rss_limit_mb
//! catches that), and whatever it accepts re-encodes to bytes that decode
//! to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = schema::decode(data) {
        let again = schema::encode(&message).expect("a decoded message re-encodes");
        let back = schema::decode(&again).expect("a re-encoded message decodes");
        // Bytes, not values: an embedding may hold NaN, which is not equal to itself.
        assert_eq!(
            schema::encode(&back).expect("it re-encodes again"),
            again,
            "the round trip is stable"
        );
    }
});
