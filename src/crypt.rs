//! Encryption at rest: master keys from the host, per-customer data keys, sealing and blind
//! index hashes.
//!
//! The host holds the master keys and hands them over through a [`KeyProvider`]; [`Keys`] is a
//! provider that keeps them in memory (cleared on drop) and reads them from a key file. Below
//! the public part are the building blocks the store's encryption is made of, all pure
//! functions over bytes:
//!
//! - **Sealing**: XChaCha20-Poly1305 with a random 24-byte nonce stored before the ciphertext,
//!   and associated data naming what the bytes are and whose, so sealed bytes moved to another
//!   place (another customer, another field) do not open.
//! - **Data keys**: a random 256-bit key per customer, wrapped (sealed) under a key derived from
//!   the current master key and stored as `key id ++ nonce ++ sealed key`. Destroying the
//!   wrapped key makes everything sealed under it unreadable (crypto-shredding).
//! - **Key check**: a known block sealed under each master key, so a wrong key is told apart
//!   from damaged data when a store is opened.
//! - **Blind index hashes**: HMAC-SHA-256 of an index value under a key derived from a master
//!   key (a different derivation from the wrapping key), truncated to 16 bytes, so equality
//!   lookups work without the plaintext in any index.
//!
//! Every failure is an [`ErrorKind::Key`] error: a missing or wrong key, or bytes that do not
//! authenticate, never a panic or garbage.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{Error, ErrorKind, KeyProblem, Result};

/// Gives the store its master keys: the host's, never stored in the store file or a backup.
///
/// Each master key has a numeric id; the id is stored beside what a key wrapped, so a store
/// can hold data under several master keys while a rotation runs.
pub trait KeyProvider: Send + Sync {
    /// The id of the master key new data keys are wrapped under.
    fn current_key_id(&self) -> u32;
    /// The master key with this id, if the provider holds it.
    fn master_key(&self, id: u32) -> Option<MasterKey>;
}

/// A 256-bit master key. Its bytes are cleared from memory when it is dropped, and `Debug`
/// does not show them.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl MasterKey {
    /// A master key from its 32 bytes.
    ///
    /// # Errors
    /// [`KeyProblem::Malformed`] unless `bytes` is 32 bytes long.
    pub fn from_bytes(bytes: &[u8]) -> Result<MasterKey> {
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| key_error(KeyProblem::Malformed { line: 0 }))?;
        Ok(MasterKey(Zeroizing::new(key)))
    }

    /// A sub-key for one purpose (`HMAC-SHA-256(master, "customerdb " ++ purpose)`), so the
    /// wrapping key and the blind-index key are independent.
    fn derive(&self, purpose: &str) -> Result<SecretKey> {
        derive(self.0.as_slice(), purpose)
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// A [`KeyProvider`] holding master keys in memory: the last one added is current.
///
/// ```
/// use customerdb::crypt::{KeyProvider, Keys};
/// let keys = Keys::parse("# id, then the key as 64 hex digits\n1 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n")?;
/// assert_eq!(keys.current_key_id(), 1);
/// assert!(keys.master_key(1).is_some());
/// # Ok::<(), customerdb::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Keys {
    keys: BTreeMap<u32, MasterKey>,
    current: u32,
}

impl Keys {
    /// A provider with one master key, `id`.
    pub fn new(id: u32, key: MasterKey) -> Keys {
        Keys {
            keys: BTreeMap::from([(id, key)]),
            current: id,
        }
    }

    /// Adds master key `id` and makes it current (the next step is a key rotation); the older
    /// keys stay, so what they wrapped stays readable.
    #[must_use]
    pub fn with(mut self, id: u32, key: MasterKey) -> Keys {
        self.keys.insert(id, key);
        self.current = id;
        self
    }

    /// Reads a key file: one key a line, its id (decimal) and its 32 bytes as 64 hexadecimal
    /// digits, separated by white space; empty lines and lines starting with `#` are skipped.
    /// The key on the last line is current.
    ///
    /// # Errors
    /// [`KeyProblem::Malformed`] naming the first line that does not parse, or line 1 if the
    /// text holds no key.
    pub fn parse(text: &str) -> Result<Keys> {
        let mut keys: Option<Keys> = None;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || key_error(KeyProblem::Malformed { line: n + 1 });
            let mut parts = line.split_whitespace();
            let (Some(id), Some(hex), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad());
            };
            let id: u32 = id.parse().map_err(|_| bad())?;
            let bytes = Zeroizing::new(parse_hex(hex).ok_or_else(bad)?);
            let key = MasterKey::from_bytes(&bytes).map_err(|_| bad())?;
            keys = Some(match keys {
                None => Keys::new(id, key),
                Some(k) => k.with(id, key),
            });
        }
        keys.ok_or_else(|| key_error(KeyProblem::Malformed { line: 1 }))
    }

    /// [`Keys::parse`] of the file at `path`.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] if the file cannot be read, otherwise as [`Keys::parse`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Keys> {
        let text = Zeroizing::new(std::fs::read_to_string(path)?);
        Keys::parse(&text)
    }
}

impl KeyProvider for Keys {
    fn current_key_id(&self) -> u32 {
        self.current
    }

    fn master_key(&self, id: u32) -> Option<MasterKey> {
        self.keys.get(&id).cloned()
    }
}

/// The bytes of 64 hexadecimal digits.
fn parse_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn key_error(problem: KeyProblem) -> Error {
    Error::new(ErrorKind::Key(problem))
}

fn hmac(key: &[u8]) -> Result<Hmac<Sha256>> {
    <Hmac<Sha256> as Mac>::new_from_slice(key)
        .map_err(|_| key_error(KeyProblem::Malformed { line: 0 }))
}

/// A 256-bit symmetric key (a data key or a derived key), cleared on drop (every clone too).
#[derive(Clone)]
pub(crate) struct SecretKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// A fresh random key (a customer's data key).
    pub(crate) fn generate() -> Result<SecretKey> {
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(key.as_mut_slice()).map_err(|_| key_error(KeyProblem::Random))?;
        Ok(SecretKey(key))
    }

    /// A sub-key of this key for one purpose (`HMAC-SHA-256(key, "customerdb " ++ purpose)`),
    /// independent of the key itself and of the sub-keys for other purposes.
    pub(crate) fn derive(&self, purpose: &str) -> Result<SecretKey> {
        derive(self.0.as_slice(), purpose)
    }
}

/// `HMAC-SHA-256(key, "customerdb " ++ purpose)` as a key.
fn derive(key: &[u8], purpose: &str) -> Result<SecretKey> {
    let mut mac = hmac(key)?;
    mac.update(b"customerdb ");
    mac.update(purpose.as_bytes());
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&mac.finalize().into_bytes());
    Ok(SecretKey(out))
}

const NONCE_LEN: usize = 24;

/// Seals `plain` under `key` with associated data `aad`: `nonce (24) ++ ciphertext ++ tag (16)`.
pub(crate) fn seal(key: &SecretKey, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|_| key_error(KeyProblem::Random))?;
    let cipher = XChaCha20Poly1305::new(key.0.as_slice().into());
    let sealed = cipher
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
        .map_err(|_| key_error(KeyProblem::Unauthentic { what: "value" }))?;
    let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens bytes made by [`seal`] with the same key and associated data; `what` names them for
/// the error.
pub(crate) fn open(
    key: &SecretKey,
    aad: &[u8],
    sealed: &[u8],
    what: &'static str,
) -> Result<Zeroizing<Vec<u8>>> {
    let unauthentic = || key_error(KeyProblem::Unauthentic { what });
    let (nonce, body) = sealed.split_at_checked(NONCE_LEN).ok_or_else(unauthentic)?;
    let cipher = XChaCha20Poly1305::new(key.0.as_slice().into());
    cipher
        .decrypt(XNonce::from_slice(nonce), Payload { msg: body, aad })
        .map(Zeroizing::new)
        .map_err(|_| unauthentic())
}

/// The master key `id` of `keys`, or [`KeyProblem::UnknownKeyId`].
fn master(keys: &dyn KeyProvider, id: u32) -> Result<MasterKey> {
    keys.master_key(id)
        .ok_or_else(|| key_error(KeyProblem::UnknownKeyId(id)))
}

/// Associated data of customer `owner`'s wrapped data key.
fn data_key_aad(owner: u64) -> [u8; 11] {
    let mut aad = [0u8; 11];
    aad[..3].copy_from_slice(b"dek");
    aad[3..].copy_from_slice(&owner.to_be_bytes());
    aad
}

/// Wraps customer `owner`'s data key under the current master key:
/// `key id (u32 BE) ++ seal(wrapping key, "dek" ++ owner, data key)`.
pub(crate) fn wrap(keys: &dyn KeyProvider, data_key: &SecretKey, owner: u64) -> Result<Vec<u8>> {
    wrap_for(keys, data_key, &data_key_aad(owner))
}

/// Wraps `key` under the current master key with associated data `aad`.
fn wrap_for(keys: &dyn KeyProvider, key: &SecretKey, aad: &[u8]) -> Result<Vec<u8>> {
    let id = keys.current_key_id();
    let wrapping = master(keys, id)?.derive("wrap")?;
    let mut out = id.to_be_bytes().to_vec();
    out.extend_from_slice(&seal(&wrapping, aad, key.0.as_slice())?);
    Ok(out)
}

/// The id of the master key `wrapped` (made by [`wrap`]) is under.
pub(crate) fn wrapped_key_id(wrapped: &[u8]) -> Result<u32> {
    let (id, _) = wrapped
        .split_first_chunk::<4>()
        .ok_or_else(|| key_error(KeyProblem::Unauthentic { what: "data key" }))?;
    Ok(u32::from_be_bytes(*id))
}

/// Unwraps customer `owner`'s data key made by [`wrap`].
pub(crate) fn unwrap(keys: &dyn KeyProvider, wrapped: &[u8], owner: u64) -> Result<SecretKey> {
    unwrap_for(keys, wrapped, &data_key_aad(owner), "data key")
}

fn unwrap_for(
    keys: &dyn KeyProvider,
    wrapped: &[u8],
    aad: &[u8],
    what: &'static str,
) -> Result<SecretKey> {
    let id = wrapped_key_id(wrapped)?;
    let wrapping = master(keys, id)?.derive("wrap")?;
    let plain = open(&wrapping, aad, &wrapped[4..], what)?;
    let key: [u8; 32] = plain
        .as_slice()
        .try_into()
        .map_err(|_| key_error(KeyProblem::Unauthentic { what }))?;
    Ok(SecretKey(Zeroizing::new(key)))
}

const BLIND_KEY_AAD: &[u8] = b"customerdb blind index key";

/// Wraps a store's blind index key as [`wrap`] wraps a data key.
pub(crate) fn wrap_blind_key(keys: &dyn KeyProvider, key: &SecretKey) -> Result<Vec<u8>> {
    wrap_for(keys, key, BLIND_KEY_AAD)
}

/// Unwraps a blind index key made by [`wrap_blind_key`].
pub(crate) fn unwrap_blind_key(keys: &dyn KeyProvider, wrapped: &[u8]) -> Result<SecretKey> {
    unwrap_for(keys, wrapped, BLIND_KEY_AAD, "blind index key")
}

const KEY_CHECK_AAD: &[u8] = b"customerdb key check";
const KEY_CHECK_BLOCK: &[u8; 32] = b"customerdb master key check v1..";

/// A known block sealed under master key `id`, to tell a wrong key from damaged data.
pub(crate) fn key_check(keys: &dyn KeyProvider, id: u32) -> Result<Vec<u8>> {
    seal(
        &master(keys, id)?.derive("wrap")?,
        KEY_CHECK_AAD,
        KEY_CHECK_BLOCK,
    )
}

/// Checks that `keys` holds the master key `id` that made `check` ([`key_check`]).
///
/// # Errors
/// [`KeyProblem::UnknownKeyId`] if it has none under `id`, [`KeyProblem::WrongKey`] if its key
/// does not open the check.
pub(crate) fn verify_key_check(keys: &dyn KeyProvider, id: u32, check: &[u8]) -> Result<()> {
    let wrapping = master(keys, id)?.derive("wrap")?;
    match open(&wrapping, KEY_CHECK_AAD, check, "key check") {
        Ok(block) if block.as_slice() == KEY_CHECK_BLOCK => Ok(()),
        _ => Err(key_error(KeyProblem::WrongKey(id))),
    }
}

/// Bytes of a blind index hash.
pub(crate) const BLIND_LEN: usize = 16;

/// Computes blind index hashes: equal values give equal hashes, and without the key a hash
/// says nothing about its value (not even its length or order).
pub(crate) struct Blinder(Hmac<Sha256>);

impl Blinder {
    /// The blinder of a blind index key: a random key of the store, kept wrapped under the
    /// master key like a data key, so a master key rotation does not change it (changing it
    /// would mean rebuilding every blinded index).
    pub(crate) fn new(key: &SecretKey) -> Result<Blinder> {
        Ok(Blinder(hmac(key.0.as_slice())?))
    }

    /// `HMAC-SHA-256(blind key, tag ++ value)` truncated to [`BLIND_LEN`] bytes: 128 bits, so
    /// a collision between two values of one index is not a practical concern.
    pub(crate) fn blind(&self, tag: u16, value: &[u8]) -> [u8; BLIND_LEN] {
        let mut mac = self.0.clone();
        mac.update(&tag.to_be_bytes());
        mac.update(value);
        let mut out = [0u8; BLIND_LEN];
        out.copy_from_slice(&mac.finalize().into_bytes()[..BLIND_LEN]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> MasterKey {
        MasterKey::from_bytes(&[b; 32]).unwrap()
    }

    fn problem(e: &Error) -> &KeyProblem {
        match e.kind() {
            ErrorKind::Key(p) => p,
            other => panic!("not a key error: {other:?}"),
        }
    }

    #[test]
    fn sealed_bytes_open_only_with_their_key_and_place() {
        let k = SecretKey::generate().unwrap();
        let sealed = seal(&k, b"customer 1 name", b"Ada Lovelace").unwrap();
        assert!(!sealed.windows(3).any(|w| w == b"Ada"));
        let plain = open(&k, b"customer 1 name", &sealed, "name").unwrap();
        assert_eq!(plain.as_slice(), b"Ada Lovelace");
        // Another place, another key, altered or truncated bytes: a typed error, no panic.
        let other = SecretKey::generate().unwrap();
        let mut tampered = sealed.clone();
        tampered[30] ^= 1;
        for e in [
            open(&k, b"customer 2 name", &sealed, "name").unwrap_err(),
            open(&other, b"customer 1 name", &sealed, "name").unwrap_err(),
            open(&k, b"customer 1 name", &tampered, "name").unwrap_err(),
            open(&k, b"customer 1 name", &sealed[..10], "name").unwrap_err(),
        ] {
            assert_eq!(problem(&e), &KeyProblem::Unauthentic { what: "name" });
        }
    }

    #[test]
    fn sealing_twice_gives_different_bytes() {
        let k = SecretKey::generate().unwrap();
        assert_ne!(seal(&k, b"", b"x").unwrap(), seal(&k, b"", b"x").unwrap());
    }

    #[test]
    fn a_data_key_unwraps_for_its_owner_under_any_key_the_provider_still_holds() {
        let keys = Keys::new(1, key(1));
        let dek = SecretKey::generate().unwrap();
        let wrapped = wrap(&keys, &dek, 7).unwrap();
        assert_eq!(wrapped_key_id(&wrapped).unwrap(), 1);
        assert_eq!(unwrap(&keys, &wrapped, 7).unwrap().0, dek.0);
        let e = unwrap(&keys, &wrapped, 8).unwrap_err();
        assert_eq!(problem(&e), &KeyProblem::Unauthentic { what: "data key" });
        // After adding key 2, old wraps still open and new ones are under key 2.
        let rotated = keys.with(2, key(2));
        assert_eq!(unwrap(&rotated, &wrapped, 7).unwrap().0, dek.0);
        assert_eq!(
            wrapped_key_id(&wrap(&rotated, &dek, 7).unwrap()).unwrap(),
            2
        );
        let e = unwrap(&Keys::new(2, key(2)), &wrapped, 7).unwrap_err();
        assert_eq!(problem(&e), &KeyProblem::UnknownKeyId(1));
        let e = unwrap(&Keys::new(1, key(9)), &wrapped, 7).unwrap_err();
        assert_eq!(problem(&e), &KeyProblem::Unauthentic { what: "data key" });
    }

    #[test]
    fn the_key_check_tells_a_wrong_key_from_a_missing_one() {
        let check = key_check(&Keys::new(1, key(1)), 1).unwrap();
        verify_key_check(&Keys::new(1, key(1)), 1, &check).unwrap();
        let e = verify_key_check(&Keys::new(1, key(2)), 1, &check).unwrap_err();
        assert_eq!(problem(&e), &KeyProblem::WrongKey(1));
        let e = verify_key_check(&Keys::new(3, key(1)), 1, &check).unwrap_err();
        assert_eq!(problem(&e), &KeyProblem::UnknownKeyId(1));
    }

    #[test]
    fn blind_hashes_are_equal_for_equal_values_only() {
        let k = SecretKey::generate().unwrap();
        let b = Blinder::new(&k).unwrap();
        let h = b.blind(1, b"ada@example.com");
        assert_eq!(h, b.blind(1, b"ada@example.com"));
        assert_ne!(h, b.blind(1, b"bob@example.com"));
        assert_ne!(h, b.blind(3, b"ada@example.com"));
        let other = Blinder::new(&SecretKey::generate().unwrap()).unwrap();
        assert_ne!(h, other.blind(1, b"ada@example.com"));
    }

    #[test]
    fn key_files_parse_and_bad_lines_are_named() {
        let one = "1 ".to_owned() + &"ab".repeat(32);
        let text = format!("# keys\n\n{one}\n2 {}\n", "cd".repeat(32));
        let keys = Keys::parse(&text).unwrap();
        assert_eq!(keys.current_key_id(), 2);
        assert!(keys.master_key(1).is_some() && keys.master_key(3).is_none());
        for (bad, line) in [
            (format!("{one}\nx {}", "ab".repeat(32)), 2),
            (format!("{one}\n2 {}", "ab".repeat(31)), 2),
            (format!("2 {}", "zz".repeat(32)), 1),
            (format!("{one} extra"), 1),
            ("# nothing\n".to_owned(), 1),
        ] {
            let e = Keys::parse(&bad).unwrap_err();
            assert_eq!(problem(&e), &KeyProblem::Malformed { line }, "{bad}");
        }
        assert!(!format!("{keys:?}").contains("ab"));
    }
}
