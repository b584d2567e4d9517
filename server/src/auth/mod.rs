//! Keys, JWK/JWKS, JWT signing and verification (EdDSA own tokens; EdDSA/ES256/RS256 trusted issuers).
