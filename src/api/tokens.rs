//! Service-account tokens: ES256 JWTs signed with a key the server keeps
//! (`<data-dir>/server/tls/service-account.key`), issued by the TokenRequest
//! API (`serviceaccounts/<name>/token`) and accepted as bearer tokens.
//! Signing and verification use `ring` directly: a JWT here is one fixed
//! algorithm and a handful of claims.

use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

pub struct TokenSigner {
    key: EcdsaKeyPair,
    public: Vec<u8>,
    kid: String,
    rng: SystemRandom,
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

impl TokenSigner {
    pub fn new(pkcs8: &[u8]) -> Result<TokenSigner, String> {
        let rng = SystemRandom::new();
        let key =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
                .map_err(|e| format!("service-account key: {e}"))?;
        let public = key.public_key().as_ref().to_vec();
        use sha2::Digest;
        let kid = b64(&sha2::Sha256::digest(&public)[..16]);
        Ok(TokenSigner {
            key,
            public,
            kid,
            rng,
        })
    }

    /// Signs `claims` (a JSON object) as a compact JWS.
    pub fn sign(&self, claims: &Value) -> Result<String, String> {
        let header = json!({"alg": "ES256", "kid": self.kid});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self
            .key
            .sign(&self.rng, input.as_bytes())
            .map_err(|e| format!("signing: {e}"))?;
        Ok(format!("{input}.{}", b64(sig.as_ref())))
    }

    /// The claims of a token this server signed that is valid now.
    pub fn verify(&self, token: &str, now: i64) -> Option<Value> {
        let mut parts = token.split('.');
        let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let dec = |p: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        };
        let header: Value = serde_json::from_slice(&dec(h)?).ok()?;
        if header.get("alg")? != "ES256" {
            return None;
        }
        let sig = dec(s)?;
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &self.public)
            .verify(format!("{h}.{c}").as_bytes(), &sig)
            .ok()?;
        let claims: Value = serde_json::from_slice(&dec(c)?).ok()?;
        if claims.get("iss")? != ISSUER {
            return None;
        }
        let exp = claims.get("exp").and_then(Value::as_i64)?;
        let nbf = claims.get("nbf").and_then(Value::as_i64).unwrap_or(0);
        if now >= exp || now < nbf {
            return None;
        }
        Some(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> TokenSigner {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        TokenSigner::new(&key.serialize_der()).unwrap()
    }

    #[test]
    fn round_trip_expiry_and_forgery() {
        let s = signer();
        let t = s
            .sign(&json!({"iss": ISSUER, "sub": "system:serviceaccount:default:default", "exp": 2000, "nbf": 1000}))
            .unwrap();
        assert_eq!(
            s.verify(&t, 1500).unwrap()["sub"],
            "system:serviceaccount:default:default"
        );
        assert!(s.verify(&t, 2000).is_none(), "expired");
        assert!(s.verify(&t, 999).is_none(), "not yet valid");
        let other = signer();
        assert!(other.verify(&t, 1500).is_none(), "another key's token");
        let mut forged: Vec<&str> = t.split('.').collect();
        let evil = b64(
            json!({"iss": ISSUER, "sub": "system:serviceaccount:kube-system:admin", "exp": 2000})
                .to_string()
                .as_bytes(),
        );
        forged[1] = &evil;
        assert!(
            s.verify(&forged.join("."), 1500).is_none(),
            "tampered claims"
        );
    }
}
