//! ID tokens signed at run time with a freshly generated key, each check
//! refused on its own.

use std::sync::OnceLock;

use jsonwebtoken::{EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, rand_core::OsRng};
use serde_json::json;

use super::*;

const ISSUER: &str = "http://127.0.0.1:4000";
const CLIENT: &str = "entitle-portal";
const NONCE: &str = "n-0S6_WzA2Mj";

struct TestKey {
    encoding: EncodingKey,
    jwk: Value,
}

fn key(index: usize) -> &'static TestKey {
    static KEYS: OnceLock<Vec<TestKey>> = OnceLock::new();
    &KEYS.get_or_init(|| {
        (0..2)
            .map(|_| {
                let private = RsaPrivateKey::new(&mut OsRng, 2048).expect("key generated");
                let der = private.to_pkcs1_der().expect("DER");
                let public = private.to_public_key();
                TestKey {
                    encoding: EncodingKey::from_rsa_der(der.as_bytes()),
                    jwk: json!({
                        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": "k1",
                        "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
                        "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
                    }),
                }
            })
            .collect()
    })[index]
}

fn published() -> JwkSet {
    serde_json::from_value(json!({"keys": [key(0).jwk]})).expect("a JWKS")
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn claims() -> Value {
    json!({
        "iss": ISSUER, "aud": CLIENT, "sub": "user-42", "nonce": NONCE,
        "iat": now(), "exp": now() + 300,
        "email": "Ada@Acme.Example", "email_verified": true,
        "groups": ["Entitle Admins", "Everyone"],
    })
}

fn sign(claims: &Value, signer: usize) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("k1".into());
    jsonwebtoken::encode(&header, claims, &key(signer).encoding).expect("signed")
}

fn check(token: &str) -> Result<Identity, OidcError> {
    verify_id_token(token, &published(), ISSUER, CLIENT, NONCE, "groups")
}

fn refused(mut change: impl FnMut(&mut Value)) -> String {
    let mut c = claims();
    change(&mut c);
    match check(&sign(&c, 0)) {
        Err(OidcError::Token(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_good_token_names_the_person() {
    let identity = check(&sign(&claims(), 0)).expect("accepted");
    assert_eq!(identity.subject, "user-42");
    assert_eq!(identity.email.as_deref(), Some("ada@acme.example"));
    assert_eq!(identity.groups, ["Entitle Admins", "Everyone"]);
}

#[test]
fn each_check_refuses_on_its_own() {
    assert!(refused(|c| c["aud"] = json!("another-client")).contains("audience"));
    assert!(refused(|c| c["nonce"] = json!("other")).contains("nonce"));
    assert!(
        refused(|c| c
            .as_object_mut()
            .map(|o| o.remove("nonce"))
            .map(drop)
            .unwrap_or(()))
        .contains("nonce")
    );
    assert!(
        refused(|c| {
            c["exp"] = json!(now() - 3600);
            c["iat"] = json!(now() - 7200);
        })
        .contains("expired")
    );
    assert!(refused(|c| c["iss"] = json!("http://127.0.0.1:4001")).contains("issuer"));
    assert!(refused(|c| c["iat"] = json!(now() + 3600)).contains("future"));
    assert!(refused(|c| c["aud"] = json!([CLIENT, "other"])).contains("azp"));
    assert!(refused(|c| c["azp"] = json!("other")).contains("azp"));
    assert!(
        refused(|c| c
            .as_object_mut()
            .map(|o| o.remove("exp"))
            .map(drop)
            .unwrap_or(()))
        .contains("exp")
    );
}

#[test]
fn several_audiences_pass_when_azp_names_this_client() {
    let mut c = claims();
    c["aud"] = json!([CLIENT, "other"]);
    c["azp"] = json!(CLIENT);
    assert!(check(&sign(&c, 0)).is_ok());
}

#[test]
fn a_small_clock_difference_is_tolerated() {
    let mut c = claims();
    c["exp"] = json!(now() - 10);
    c["iat"] = json!(now() + 10);
    assert!(check(&sign(&c, 0)).is_ok());
}

#[test]
fn another_key_or_a_shared_secret_cannot_sign() {
    let forged = sign(&claims(), 1);
    assert!(matches!(check(&forged), Err(OidcError::Token(why)) if why.contains("signature")));
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    let hs = jsonwebtoken::encode(
        &header,
        &claims(),
        &EncodingKey::from_secret(b"client-secret"),
    )
    .expect("signed");
    assert!(matches!(check(&hs), Err(OidcError::Token(why)) if why.contains("HS256")));
    assert!(matches!(check("not.a.jwt"), Err(OidcError::Token(_))));
}

#[test]
fn an_unverified_email_is_not_used() {
    let mut c = claims();
    c["email_verified"] = json!(false);
    assert_eq!(check(&sign(&c, 0)).expect("accepted").email, None);
}

fn rules(lines: &[&str]) -> Vec<MappingRule> {
    lines
        .iter()
        .map(|l| MappingRule::parse(l).expect("parses"))
        .collect()
}

fn person(email: &str, groups: &[&str]) -> Identity {
    Identity {
        issuer: ISSUER.into(),
        subject: "s".into(),
        email: Some(email.into()),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    }
}

#[test]
fn the_first_matching_rule_gives_tenant_and_role() {
    let rules = rules(&[
        "email:ceo@acme.example=acme:viewer",
        "group:Entitle Admins=acme:admin",
        "domain:@Acme.Example=acme:viewer",
        "group:a=b=globex:admin",
    ]);
    let admin = person("ada@acme.example", &["Entitle Admins"])
        .map(&rules)
        .expect("mapped");
    assert_eq!((admin.tenant.as_str(), admin.role), ("acme", Role::Admin));
    let ceo = person("CEO@acme.example", &["Entitle Admins"])
        .map(&rules)
        .expect("mapped");
    assert_eq!(ceo.role, Role::Viewer);
    let other = person("bob@acme.example", &[]).map(&rules).expect("mapped");
    assert_eq!(other.role, Role::Viewer);
    let eq = person("x@y.example", &["a=b"]).map(&rules).expect("mapped");
    assert_eq!(eq.tenant, "globex");
    assert!(matches!(
        person("eve@evil.example", &["Everyone"]).map(&rules),
        Err(OidcError::Unmapped(_))
    ));
    let mut no_email = person("x@y", &[]);
    no_email.email = None;
    assert!(no_email.map(&rules).is_err());
}

#[test]
fn bad_rules_are_refused_with_the_expected_form() {
    for bad in [
        "acme:admin",
        "group:x=acme",
        "group:x=acme:super_admin",
        "team:x=acme:admin",
        "group:=acme:admin",
        "group:x=:admin",
    ] {
        assert!(
            matches!(MappingRule::parse(bad), Err(OidcError::Config(_))),
            "{bad}"
        );
    }
}

#[test]
fn pending_sign_ins_round_trip_through_their_cookie() {
    let pending = Pending::new();
    assert_eq!(
        Pending::from_cookie(&pending.to_cookie()),
        Some(pending.clone())
    );
    assert_ne!(pending.state, Pending::new().state);
    assert_eq!(Pending::from_cookie("a.b.c"), None);
    assert_eq!(
        Pending::from_cookie(&format!("{}.x", pending.to_cookie())),
        None
    );
    // RFC 7636 appendix B.
    let rfc = Pending {
        state: String::new(),
        nonce: String::new(),
        verifier: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into(),
    };
    assert_eq!(
        rfc.challenge(),
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
}

#[test]
fn only_https_or_loopback_issuers() {
    assert!(check_url("i", "https://login.example.com/t/v2.0").is_ok());
    assert!(check_url("i", "http://127.0.0.1:9000").is_ok());
    assert!(check_url("i", "http://[::1]:9000").is_ok());
    assert!(check_url("i", "http://idp.example.com").is_err());
    assert!(check_url("i", "http://localhost:9000").is_err());
    assert!(check_url("i", "ftp://127.0.0.1").is_err());
}

#[test]
fn client_credentials_are_form_encoded() {
    assert_eq!(form_encode("a b+c/é"), "a+b%2Bc%2F%C3%A9");
}
