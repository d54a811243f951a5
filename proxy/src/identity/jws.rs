//! JWS compact serialization: verifying a JWT's signature against a JWKS.
