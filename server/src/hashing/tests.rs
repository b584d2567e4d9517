//! Known-answer tests for every hash algorithm, single and batched.

use super::{hash_batch, hash_one, Digest, HashAlg, MAX_DIGEST_BYTES};

fn hex(digest: &Digest) -> String {
    format!("{digest:x}")
}

/// xxHash's sanity-check buffer: byte i is the top byte of PRIME32 * PRIME64^i (mod 2^64).
fn xxh_sanity_buffer(len: usize) -> Vec<u8> {
    const PRIME32: u64 = 2_654_435_761;
    const PRIME64: u64 = 11_400_714_785_074_694_797;
    let mut generator = PRIME32;
    (0..len)
        .map(|_| {
            let byte = (generator >> 56) as u8;
            generator = generator.wrapping_mul(PRIME64);
            byte
        })
        .collect()
}

/// The BLAKE3 test-vector input: bytes 0, 1, ..., 250 repeating.
fn blake3_input(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

const FIPS_448: &[u8] = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
const FIPS_896: &[u8] = b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";

#[test]
fn xxh3_known_answers() {
    // xxHash's own sanity check (xxhsum), seed 0, one length per code path.
    let buffer = xxh_sanity_buffer(2367);
    let cases: [(usize, u64); 13] = [
        (0, 0x2D06_8005_38D3_94C2),
        (1, 0xC44B_DFF4_074E_ECDB),
        (6, 0x27B5_6A84_CD2D_7325),
        (12, 0xA713_DAF0_DFBB_77E7),
        (24, 0xA3FE_70BF_9D35_10EB),
        (48, 0x397D_A259_ECBA_1F11),
        (80, 0xBCDE_FBBB_2C47_C90A),
        (195, 0xCD94_217E_E362_EC3A),
        (403, 0xCDEB_804D_65C6_DEA4),
        (512, 0x617E_4959_9013_CB6B),
        (2048, 0xDD59_E2C3_A5F0_38E0),
        (2240, 0x6E73_A905_39CF_2948),
        (2367, 0xCB37_AEB9_E5D3_61ED),
    ];
    for (len, expected) in cases {
        let digest = hash_one(HashAlg::Xxh3, &buffer[..len]);
        assert_eq!(digest.as_bytes(), expected.to_be_bytes(), "len {len}");
    }
    assert_eq!(hex(&hash_one(HashAlg::Xxh3, b"")), "2d06800538d394c2");
}

#[test]
fn blake3_known_answers() {
    // From the BLAKE3 team's test_vectors.json (hash mode, first 32 bytes).
    let cases = [
        (
            0,
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
        ),
        (
            1,
            "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213",
        ),
        (
            1023,
            "10108970eeda3eb932baac1428c7a2163b0e924c9a9e25b35bba72b28f70bd11",
        ),
        (
            1024,
            "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7",
        ),
        (
            1025,
            "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444",
        ),
        (
            2048,
            "e776b6028c7cd22a4d0ba182a8bf62205d2ef576467e838ed6f2529b85fba24a",
        ),
        (
            4096,
            "015094013f57a5277b59d8475c0501042c0b642e531b0a1c8f58d2163229e969",
        ),
        (
            8192,
            "aae792484c8efe4f19e2ca7d371d8c467ffb10748d8a5a1ae579948f718a2a63",
        ),
        (
            31744,
            "62b6960e1a44bcc1eb1a611a8d6235b6b4b78f32e7abc4fb4c6cdcce94895c47",
        ),
    ];
    for (len, expected) in cases {
        assert_eq!(
            hex(&hash_one(HashAlg::Blake3, &blake3_input(len))),
            expected,
            "len {len}"
        );
    }
}

#[test]
fn blake2b_known_answers() {
    // RFC 7693 Appendix A ("abc"), and the empty input.
    assert_eq!(
        hex(&hash_one(HashAlg::Blake2b, b"abc")),
        "ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d1\
         7d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923"
    );
    assert_eq!(
        hex(&hash_one(HashAlg::Blake2b, b"")),
        "786a02f742015903c6c6fd852552d272912f4740e15847618a86e217f71f5419\
         d25e1031afee585313896444934eb04b903a685b1448b755d56f701afe9be2ce"
    );
}

#[test]
fn sha256_known_answers() {
    // FIPS 180-2 Appendix B.
    assert_eq!(
        hex(&hash_one(HashAlg::Sha256, b"abc")),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        hex(&hash_one(HashAlg::Sha256, FIPS_448)),
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
    );
    assert_eq!(
        hex(&hash_one(HashAlg::Sha256, &vec![b'a'; 1_000_000])),
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
    );
}

#[test]
fn sha512_known_answers() {
    // FIPS 180-2 Appendix C.
    assert_eq!(
        hex(&hash_one(HashAlg::Sha512, b"abc")),
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
         2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
    );
    assert_eq!(
        hex(&hash_one(HashAlg::Sha512, FIPS_896)),
        "8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018\
         501d289e4900f7e4331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909"
    );
}

#[test]
fn digest_lengths_match_algorithms() {
    for alg in HashAlg::ALL {
        let digest = hash_one(alg, b"x");
        assert_eq!(digest.len(), alg.digest_len(), "{}", alg.name());
        assert!(digest.len() <= MAX_DIGEST_BYTES);
    }
}

#[test]
fn batch_equals_one_by_one_for_every_algorithm() {
    // Varied lengths (including empty and multi-chunk) so a batch path that reused state across
    // inputs, dropped one, or reordered them would disagree with hash_one.
    let owned: Vec<Vec<u8>> = [0_usize, 1, 3, 64, 65, 127, 128, 1024, 1025, 4096, 3, 0]
        .iter()
        .enumerate()
        .map(|(i, &len)| (0..len).map(|j| (i * 31 + j) as u8).collect())
        .collect();
    let inputs: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
    let mut out = vec![hash_one(HashAlg::Xxh3, b"stale")];
    for alg in HashAlg::ALL {
        hash_batch(alg, &inputs, &mut out);
        assert_eq!(out.len(), inputs.len(), "{}", alg.name());
        for (input, digest) in inputs.iter().zip(&out) {
            assert_eq!(*digest, hash_one(alg, input), "{}", alg.name());
        }
    }
    // Known answers through the batch path too.
    hash_batch(HashAlg::Sha256, &[b"abc", FIPS_448], &mut out);
    assert_eq!(
        hex(&out[1]),
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
    );
    hash_batch(HashAlg::Blake2b, &[b"", b"abc"], &mut out);
    assert!(hex(&out[1]).starts_with("ba80a53f981c4d0d"));
    hash_batch(HashAlg::Xxh3, &[], &mut out);
    assert!(out.is_empty());
}
