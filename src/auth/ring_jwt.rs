//! `jsonwebtoken`'s crypto provider on ring, the library rustls already links: verification of
//! RS256/384/512, PS256/384/512, ES256/384, EdDSA (Ed25519) and HS256/384/512, plus signing
//! (used by tests and tools to mint tokens). Choosing this over the crate's `rust_crypto`
//! feature keeps one crypto library in the binary (no `rsa`, `p256`, `ed25519-dalek`) and
//! ring's assembly ECDSA on the upgrade path; `aws_lc_rs` would add a second C library
//! (about 50 s per cold build).

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::signature as rs;

/// The provider, installed once per process by [`install`].
pub static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils::new_unimplemented(),
};

/// Installs [`PROVIDER`] as the process default (idempotent: a second call, or a provider
/// installed earlier by the same code, is fine).
pub fn install() {
    let _ = PROVIDER.install_default();
}

fn family_of(alg: Algorithm) -> AlgorithmFamily {
    alg.family()
}

/// A verifier: the algorithm and the key material ring needs, copied out of the key.
struct RingVerifier {
    alg: Algorithm,
    key: VerifyKey,
}

enum VerifyKey {
    /// ECDSA uncompressed point, Ed25519 raw key, or PKCS#1 RSAPublicKey DER.
    Unparsed(Vec<u8>),
    RsaComponents {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Hmac(ring::hmac::Key),
}

fn rsa_params(alg: Algorithm) -> Option<&'static rs::RsaParameters> {
    Some(match alg {
        Algorithm::RS256 => &rs::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &rs::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &rs::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &rs::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &rs::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &rs::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

fn hmac_alg(alg: Algorithm) -> Option<ring::hmac::Algorithm> {
    Some(match alg {
        Algorithm::HS256 => ring::hmac::HMAC_SHA256,
        Algorithm::HS384 => ring::hmac::HMAC_SHA384,
        Algorithm::HS512 => ring::hmac::HMAC_SHA512,
        _ => return None,
    })
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    let alg = *alg;
    // The key's family must be the algorithm's: an HMAC "secret" made of an RSA public key
    // (the classic HS/RS confusion) never gets here, since JWKS and PEM keys are not HMAC.
    if key.family() != family_of(alg) {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    let key = match (key.kind(), hmac_alg(alg)) {
        (DecodingKeyKind::SecretOrDer(secret), Some(h)) => {
            VerifyKey::Hmac(ring::hmac::Key::new(h, secret))
        }
        (DecodingKeyKind::SecretOrDer(bytes), None) => VerifyKey::Unparsed(bytes.clone()),
        (DecodingKeyKind::RsaModulusExponent { n, e }, None) if rsa_params(alg).is_some() => {
            VerifyKey::RsaComponents {
                n: n.clone(),
                e: e.clone(),
            }
        }
        _ => return Err(ErrorKind::InvalidKeyFormat.into()),
    };
    Ok(Box::new(RingVerifier { alg, key }))
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> Result<(), signature::Error> {
        let ok = match (&self.key, self.alg) {
            (VerifyKey::Hmac(k), _) => ring::hmac::verify(k, msg, sig).is_ok(),
            (VerifyKey::RsaComponents { n, e }, alg) => {
                let params = rsa_params(alg).ok_or_else(signature::Error::new)?;
                rs::RsaPublicKeyComponents { n, e }
                    .verify(params, msg, sig)
                    .is_ok()
            }
            (VerifyKey::Unparsed(bytes), alg) => {
                let v: &dyn rs::VerificationAlgorithm = match alg {
                    Algorithm::ES256 => &rs::ECDSA_P256_SHA256_FIXED,
                    Algorithm::ES384 => &rs::ECDSA_P384_SHA384_FIXED,
                    Algorithm::EdDSA => &rs::ED25519,
                    other => rsa_params(other).ok_or_else(signature::Error::new)?,
                };
                rs::UnparsedPublicKey::new(v, bytes)
                    .verify(msg, sig)
                    .is_ok()
            }
        };
        if ok {
            Ok(())
        } else {
            Err(signature::Error::new())
        }
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

/// A signer (tokens minted by tests and tools; the router itself never signs).
enum RingSigner {
    Ecdsa(Algorithm, rs::EcdsaKeyPair),
    Ed25519(rs::Ed25519KeyPair),
    Rsa(Algorithm, rs::RsaKeyPair),
    Hmac(Algorithm, ring::hmac::Key),
}

/// EC and Ed25519 keys as PKCS#8 DER, RSA keys as PKCS#1 or PKCS#8 DER, HMAC as the secret.
fn new_signer(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    let alg = *alg;
    if key.family() != family_of(alg) {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    let der = key.as_bytes();
    let rng = ring::rand::SystemRandom::new();
    let signer = match alg {
        Algorithm::ES256 | Algorithm::ES384 => {
            let a = if alg == Algorithm::ES256 {
                &rs::ECDSA_P256_SHA256_FIXED_SIGNING
            } else {
                &rs::ECDSA_P384_SHA384_FIXED_SIGNING
            };
            let pair = rs::EcdsaKeyPair::from_pkcs8(a, der, &rng)
                .map_err(|_| Error::from(ErrorKind::InvalidEcdsaKey))?;
            RingSigner::Ecdsa(alg, pair)
        }
        Algorithm::EdDSA => RingSigner::Ed25519(
            rs::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                .map_err(|_| Error::from(ErrorKind::InvalidEddsaKey))?,
        ),
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            let h = hmac_alg(alg).ok_or(ErrorKind::InvalidAlgorithm)?;
            RingSigner::Hmac(alg, ring::hmac::Key::new(h, der))
        }
        _ => {
            let pair = rs::RsaKeyPair::from_der(der)
                .or_else(|_| rs::RsaKeyPair::from_pkcs8(der))
                .map_err(|e| Error::from(ErrorKind::InvalidRsaKey(e.to_string())))?;
            RingSigner::Rsa(alg, pair)
        }
    };
    Ok(Box::new(signer))
}

impl Signer<Vec<u8>> for RingSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        let rng = ring::rand::SystemRandom::new();
        match self {
            RingSigner::Ecdsa(_, pair) => pair
                .sign(&rng, msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| signature::Error::new()),
            RingSigner::Ed25519(pair) => Ok(pair.sign(msg).as_ref().to_vec()),
            RingSigner::Hmac(_, key) => Ok(ring::hmac::sign(key, msg).as_ref().to_vec()),
            RingSigner::Rsa(alg, pair) => {
                let padding: &'static dyn rs::RsaEncoding = match alg {
                    Algorithm::RS256 => &rs::RSA_PKCS1_SHA256,
                    Algorithm::RS384 => &rs::RSA_PKCS1_SHA384,
                    Algorithm::RS512 => &rs::RSA_PKCS1_SHA512,
                    Algorithm::PS256 => &rs::RSA_PSS_SHA256,
                    Algorithm::PS384 => &rs::RSA_PSS_SHA384,
                    _ => &rs::RSA_PSS_SHA512,
                };
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(padding, &rng, msg, &mut sig)
                    .map_err(|_| signature::Error::new())?;
                Ok(sig)
            }
        }
    }
}

impl JwtSigner for RingSigner {
    fn algorithm(&self) -> Algorithm {
        match self {
            RingSigner::Ecdsa(a, _) | RingSigner::Rsa(a, _) | RingSigner::Hmac(a, _) => *a,
            RingSigner::Ed25519(_) => Algorithm::EdDSA,
        }
    }
}
