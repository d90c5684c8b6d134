//! Verifying a JWT: issuer selection, key lookup, signature and claims.

use super::jwks::{JwksStore, KeySet, VerifyKey};
use super::token_cache::{token_key, unix_now, TokenKey, VerifiedTokenCache};
use super::{AuthnError, Identity};
use crate::identity::{AccountForm, GerritAccount};
use crate::trace::TraceSpan;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use opentelemetry::trace::SpanKind;
use opentelemetry::KeyValue;
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// Compiled settings of one issuer.
#[derive(Debug, Clone, PartialEq)]
pub struct IssuerSettings {
    /// Exact `iss` value.
    pub issuer: String,
    /// Accepted audiences (any of).
    pub audiences: Vec<String>,
    /// Claim naming the user.
    pub user_claim: String,
    /// Claim holding the email.
    pub email_claim: String,
    /// Claim holding the user's full name.
    pub name_claim: String,
    /// Claim naming the Gerrit account, if not the user claim.
    pub gerrit_account_claim: Option<String>,
    /// What that claim holds: a username, an email or an account number.
    pub gerrit_account_form: AccountForm,
    /// Put before the user and the Gerrit account name, so this issuer's users are not
    /// another issuer's (empty: none).
    pub user_prefix: String,
    /// Accepted algorithms (asymmetric only).
    pub algorithms: Vec<Algorithm>,
    /// Clock skew tolerated on `exp`/`nbf`/`iat`.
    pub leeway: Duration,
    /// Longest accepted `exp - iat`, if limited.
    pub max_token_lifetime: Option<Duration>,
    /// Claims that must be present.
    pub required_claims: Vec<String>,
}

struct IssuerVerifier {
    settings: IssuerSettings,
    store: Arc<JwksStore>,
    validations: HashMap<Algorithm, Validation>,
}

/// Verifies tokens of every configured issuer.
pub struct TokenVerifier {
    issuers: HashMap<String, IssuerVerifier>,
    cache: Option<VerifiedTokenCache>,
    max_token_bytes: usize,
    /// The claims an identity keeps (those some rule looks at); the rest are dropped so a
    /// cached identity stays small.
    kept_claims: BTreeSet<String>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("issuers", &self.issuers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl TokenVerifier {
    /// A verifier over issuers and their key stores, remembering up to
    /// `cache_entries` verified tokens (0 disables the cache) and refusing tokens longer
    /// than `max_token_bytes` before parsing them.
    pub fn new(
        issuers: Vec<(IssuerSettings, Arc<JwksStore>)>,
        cache_entries: u64,
        max_token_bytes: usize,
    ) -> Self {
        let issuers = issuers
            .into_iter()
            .map(|(settings, store)| {
                let validations = settings
                    .algorithms
                    .iter()
                    .map(|alg| (*alg, validation_for(&settings, *alg)))
                    .collect();
                let v = IssuerVerifier {
                    settings,
                    store,
                    validations,
                };
                (v.settings.issuer.clone(), v)
            })
            .collect();
        let cache = (cache_entries > 0).then(|| VerifiedTokenCache::new(cache_entries));
        Self {
            issuers,
            cache,
            max_token_bytes,
            kept_claims: BTreeSet::new(),
        }
    }

    /// Keeps these claims in each identity (for rules' claim conditions); by default none.
    pub fn keeping_claims(mut self, names: BTreeSet<String>) -> Self {
        self.kept_claims = names;
        self
    }

    /// The key stores, for readiness and the background refreshers.
    pub fn stores(&self) -> impl Iterator<Item = &Arc<JwksStore>> {
        self.issuers.values().map(|i| &i.store)
    }

    /// Whether every issuer has a key set.
    pub fn is_ready(&self) -> bool {
        self.stores().all(|s| s.is_loaded())
    }

    /// Verifies `token` and returns the caller's identity.
    ///
    /// With trace export on, each call has a span (`verify token`), cache hit or not.
    pub async fn verify(&self, token: &str) -> Result<Arc<Identity>, AuthnError> {
        if token.len() > self.max_token_bytes {
            return Err(AuthnError::TooLarge);
        }
        let cached = self.cache.as_ref().map(|c| (c, token_key(token)));
        if let Some((cache, key)) = &cached {
            if let Some(identity) = cache.get(key, unix_now()) {
                let _span = crate::trace::child("verify token", SpanKind::Internal, || {
                    vec![KeyValue::new("mesh_authz.token_cache", "hit")]
                });
                return Ok(identity);
            }
        }
        let span = crate::trace::child("verify token", SpanKind::Internal, || {
            let cache = if cached.is_some() { "miss" } else { "off" };
            vec![KeyValue::new("mesh_authz.token_cache", cache)]
        });
        span.run(self.verify_uncached(token, cached, &span)).await
    }

    async fn verify_uncached(
        &self,
        token: &str,
        cached: Option<(&VerifiedTokenCache, TokenKey)>,
        span: &TraceSpan,
    ) -> Result<Arc<Identity>, AuthnError> {
        reject_critical_header(token)?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| header_error(token))?;
        // The issuer is chosen from the unverified payload; nothing else in it is trusted
        // until the signature checks out with that issuer's key.
        let iss = unverified_issuer(token)?;
        let issuer = self.issuers.get(&iss).ok_or(AuthnError::UnknownIssuer)?;
        // A configured issuer's name, never the token's text.
        span.record("mesh_authz.issuer", &iss);
        let validation = issuer
            .validations
            .get(&header.alg)
            .ok_or(AuthnError::AlgorithmNotAccepted)?;

        // Read before the key set: if the set changes meanwhile, the cache entry is
        // merely re-verified on its next use.
        let generation = issuer.store.generation();
        let key = issuer.key_for(header.kid.as_deref(), header.alg).await?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation)
            .map_err(|e| map_error(e.into_kind()))?;
        let exp = numeric_claim(&data.claims, "exp")?;
        check_claims(&issuer.settings, &data.claims, exp, unix_now())?;
        let identity = Arc::new(identity_from(
            &issuer.settings,
            data.claims,
            &self.kept_claims,
        )?);
        if let Some((cache, key)) = cached {
            cache.insert(key, identity.clone(), exp, issuer.store.clone(), generation);
        }
        Ok(identity)
    }
}

impl TokenVerifier {
    /// Verifies an ID token that `issuer`'s token endpoint gave client `client_id`: the
    /// signature with the issuer's keys, `iss`, `aud` holding the client, `azp`
    /// (OIDC Core 3.1.3.7), `exp`/`nbf`/`iat`, the issuer's required claims and lifetime
    /// bound, the `nonce` of the sign-in when one is expected (a refreshed ID token has
    /// none, OIDC Core 12.2), and the user claim. Returns the claims a session keeps.
    pub async fn verify_id_token(
        &self,
        token: &str,
        issuer: &str,
        client_id: &str,
        nonce: Option<&str>,
    ) -> Result<VerifiedIdToken, AuthnError> {
        if token.len() > self.max_token_bytes {
            return Err(AuthnError::TooLarge);
        }
        reject_critical_header(token)?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| header_error(token))?;
        if unverified_issuer(token)? != issuer {
            return Err(AuthnError::UnknownIssuer);
        }
        let verifier = self.issuers.get(issuer).ok_or(AuthnError::UnknownIssuer)?;
        let mut validation = verifier
            .validations
            .get(&header.alg)
            .ok_or(AuthnError::AlgorithmNotAccepted)?
            .clone();
        validation.set_audience(&[client_id]);
        let key = verifier.key_for(header.kid.as_deref(), header.alg).await?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| map_error(e.into_kind()))?;
        let claims = data.claims;
        let exp = numeric_claim(&claims, "exp")?;
        check_claims(&verifier.settings, &claims, exp, unix_now())?;
        let several_audiences = matches!(claims.get("aud"), Some(Value::Array(a)) if a.len() > 1);
        match claims.get("azp") {
            Some(Value::String(azp)) if azp == client_id => {}
            None if !several_audiences => {}
            _ => return Err(AuthnError::AuthorizedParty),
        }
        if let Some(expected) = nonce {
            match claims.get("nonce") {
                Some(Value::String(n)) if n == expected => {}
                _ => return Err(AuthnError::Nonce),
            }
        }
        let kept = self.session_claims(&verifier.settings, &claims);
        // The identity must be buildable now, not at the first request.
        identity_from(&verifier.settings, kept.clone(), &self.kept_claims)?;
        Ok(VerifiedIdToken { claims: kept, exp })
    }

    /// The identity of a session: `claims` as [`TokenVerifier::verify_id_token`] kept
    /// them, read with the issuer's settings as a bearer token's would be.
    pub fn session_identity(
        &self,
        issuer: &str,
        claims: &Map<String, Value>,
    ) -> Result<Identity, AuthnError> {
        let verifier = self.issuers.get(issuer).ok_or(AuthnError::UnknownIssuer)?;
        let mut identity = identity_from(&verifier.settings, claims.clone(), &self.kept_claims)?;
        identity.credential = crate::identity::Credential::Session;
        Ok(identity)
    }

    /// The claims a session keeps: `sub`, those an identity is built from and those rules
    /// read.
    fn session_claims(
        &self,
        settings: &IssuerSettings,
        claims: &Map<String, Value>,
    ) -> Map<String, Value> {
        // `sub` always: a refreshed ID token must name the same subject.
        let wanted = |name: &str| {
            name == "sub"
                || name == settings.user_claim
                || name == settings.email_claim
                || name == settings.name_claim
                || settings.gerrit_account_claim.as_deref() == Some(name)
                || self.kept_claims.contains(name)
        };
        claims
            .iter()
            .filter(|(name, _)| wanted(name))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// An ID token's claims as a session keeps them, and its expiry.
#[derive(Debug, Clone)]
pub struct VerifiedIdToken {
    /// The claims identities and rules read (not the token's other content).
    pub claims: Map<String, Value>,
    /// The token's `exp` (Unix seconds).
    pub exp: u64,
}

impl IssuerVerifier {
    /// The key for `kid` and `alg`, refetching the key set once for an unknown `kid`.
    async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<VerifyKey>, AuthnError> {
        let set = self.store.key_set().ok_or(AuthnError::KeysUnavailable)?;
        let set = match set.find(kid) {
            Some(_) => set,
            None => match self.store.refetch_for_unknown_kid(kid).await {
                Ok(newer) => newer.unwrap_or(set),
                Err(_) => return Err(AuthnError::KeyFetchPending),
            },
        };
        find_fitting(&set, kid, alg).cloned()
    }
}

fn find_fitting<'a>(
    set: &'a KeySet,
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<&'a Arc<VerifyKey>, AuthnError> {
    let key = set.find(kid).ok_or(AuthnError::UnknownKeyId)?;
    if key.family != alg.family() || key.alg.is_some_and(|a| a != alg) {
        return Err(AuthnError::KeyMismatch);
    }
    Ok(key)
}

fn validation_for(settings: &IssuerSettings, alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.set_issuer(&[&settings.issuer]);
    v.set_audience(&settings.audiences);
    v.set_required_spec_claims(&["exp", "iss", "aud"]);
    v.leeway = settings.leeway.as_secs();
    v.validate_exp = true;
    v.validate_nbf = true;
    v
}

/// Why a header did not parse: a readable header whose `alg` jsonwebtoken does not know
/// (`none`, say) is an algorithm problem, anything else a malformed token.
fn header_error(token: &str) -> AuthnError {
    #[derive(serde::Deserialize)]
    struct Peek {
        #[allow(dead_code)] // only its presence matters
        alg: String,
    }
    let readable = token
        .split('.')
        .next()
        .and_then(|h| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(h.trim_end_matches('='))
                .ok()
        })
        .and_then(|bytes| serde_json::from_slice::<Peek>(&bytes).ok());
    match readable {
        Some(_) => AuthnError::AlgorithmNotAccepted,
        None => AuthnError::Malformed,
    }
}

/// Refuses a protected header that has `crit` at all, whatever its value (RFC 7515
/// §4.1.11: every listed extension must be understood and processed; we support none).
/// jsonwebtoken parses `crit` but does not act on it, and reads `"crit": null` as absent.
/// Read as a JSON object, so escaped (`"cr\u0069t"`) and repeated keys count too. A header
/// that is not a JSON object is left to `decode_header`, which reports it.
fn reject_critical_header(token: &str) -> Result<(), AuthnError> {
    let Some(encoded) = token.split('.').next() else {
        return Ok(());
    };
    let Ok(bytes) =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded.trim_end_matches('='))
    else {
        return Ok(());
    };
    match serde_json::from_slice::<Map<String, Value>>(&bytes) {
        Ok(header) if header.contains_key("crit") => Err(AuthnError::UnsupportedCriticalHeader),
        _ => Ok(()),
    }
}

fn unverified_issuer(token: &str) -> Result<String, AuthnError> {
    #[derive(serde::Deserialize)]
    struct Peek {
        iss: Option<String>,
    }
    let payload = token.split('.').nth(1).ok_or(AuthnError::Malformed)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| AuthnError::Malformed)?;
    let peek: Peek = serde_json::from_slice(&bytes).map_err(|_| AuthnError::Malformed)?;
    peek.iss.ok_or(AuthnError::UnknownIssuer)
}

fn map_error(kind: ErrorKind) -> AuthnError {
    match kind {
        ErrorKind::ExpiredSignature => AuthnError::Expired,
        ErrorKind::ImmatureSignature => AuthnError::NotYetValid,
        ErrorKind::InvalidAudience => AuthnError::Audience,
        ErrorKind::InvalidIssuer => AuthnError::UnknownIssuer,
        ErrorKind::InvalidSignature => AuthnError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => AuthnError::KeyMismatch,
        ErrorKind::MissingRequiredClaim(c) | ErrorKind::InvalidClaimFormat(c) => {
            AuthnError::Claim(c)
        }
        _ => AuthnError::Malformed,
    }
}

/// The checks jsonwebtoken does not make: `iat` not in the future, the lifetime bound,
/// and required claims.
fn check_claims(
    settings: &IssuerSettings,
    claims: &Map<String, Value>,
    exp: u64,
    now: u64,
) -> Result<(), AuthnError> {
    let iat = match claims.get("iat") {
        None | Some(Value::Null) => None,
        Some(_) => Some(numeric_claim(claims, "iat")?),
    };
    if iat.is_some_and(|iat| iat > now + settings.leeway.as_secs()) {
        return Err(AuthnError::IssuedInFuture);
    }
    if let Some(max) = settings.max_token_lifetime {
        let iat = iat.ok_or_else(|| AuthnError::Claim("iat".into()))?;
        if exp.saturating_sub(iat) > max.as_secs() {
            return Err(AuthnError::LifetimeTooLong);
        }
    }
    for name in &settings.required_claims {
        if matches!(claims.get(name), None | Some(Value::Null)) {
            return Err(AuthnError::Claim(name.clone()));
        }
    }
    Ok(())
}

/// A NumericDate claim as whole seconds (fractions are allowed by RFC 7519).
fn numeric_claim(claims: &Map<String, Value>, name: &str) -> Result<u64, AuthnError> {
    match claims.get(name) {
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .ok_or_else(|| AuthnError::Claim(name.to_string())),
        _ => Err(AuthnError::Claim(name.to_string())),
    }
}

fn identity_from(
    settings: &IssuerSettings,
    claims: Map<String, Value>,
    kept: &BTreeSet<String>,
) -> Result<Identity, AuthnError> {
    let prefix = settings.user_prefix.as_str();
    let user = match claims.get(&settings.user_claim) {
        Some(Value::String(s)) if !s.is_empty() => format!("{prefix}{s}"),
        _ => return Err(AuthnError::Claim(settings.user_claim.clone())),
    };
    let email = match claims.get(&settings.email_claim) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    let account_claim = settings
        .gerrit_account_claim
        .as_ref()
        .unwrap_or(&settings.user_claim);
    // The declared form decides what the value means, not its JSON type: digits are a
    // username unless the issuer says the claim holds account numbers.
    let gerrit_account = match claims.get(account_claim) {
        Some(Value::String(s)) if !s.is_empty() => {
            GerritAccount::from_claim(settings.gerrit_account_form, &format!("{prefix}{s}"))
        }
        Some(Value::Number(n)) if n.is_u64() => {
            GerritAccount::from_claim(settings.gerrit_account_form, &format!("{prefix}{n}"))
        }
        _ => None,
    }
    .ok_or_else(|| AuthnError::Claim(account_claim.clone()))?;
    let display_name = match claims.get(&settings.name_claim) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    Ok(Identity {
        issuer: settings.issuer.clone(),
        user,
        email,
        gerrit_account,
        display_name,
        claims: Arc::new(
            claims
                .into_iter()
                .filter(|(name, _)| kept.contains(name))
                .collect(),
        ),
        credential: crate::identity::Credential::Token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(max: Option<u64>, required: &[&str]) -> IssuerSettings {
        IssuerSettings {
            issuer: "https://idp".into(),
            audiences: vec!["a".into()],
            user_claim: "sub".into(),
            email_claim: "email".into(),
            name_claim: "name".into(),
            gerrit_account_claim: None,
            gerrit_account_form: AccountForm::Username,
            user_prefix: String::new(),
            algorithms: vec![Algorithm::RS256],
            leeway: Duration::from_secs(30),
            max_token_lifetime: max.map(Duration::from_secs),
            required_claims: required.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn with_header(header_json: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!(
            "{}.{}.sig",
            b64(header_json),
            b64(r#"{"iss":"https://idp"}"#)
        )
    }

    #[test]
    fn crit_is_refused_however_it_is_spelled_and_other_headers_pass() {
        for header in [
            r#"{"alg":"RS256","cr\u0069t":["urn:x"]}"#,
            r#"{"alg":"RS256","crit":["urn:x"],"crit":null}"#,
            r#"{"crit":0,"alg":"RS256"}"#,
        ] {
            assert_eq!(
                reject_critical_header(&with_header(header)),
                Err(AuthnError::UnsupportedCriticalHeader),
                "{header}"
            );
        }
        for header in [r#"{"alg":"RS256","critical":true}"#, "not json"] {
            assert_eq!(
                reject_critical_header(&with_header(header)),
                Ok(()),
                "{header}"
            );
        }
    }

    #[test]
    fn iat_in_the_future_beyond_leeway_is_rejected() {
        let s = settings(None, &[]);
        let now = 1_000_000;
        assert_eq!(
            check_claims(&s, &claims(json!({"iat": now + 30})), now + 60, now),
            Ok(())
        );
        assert_eq!(
            check_claims(&s, &claims(json!({"iat": now + 31})), now + 60, now),
            Err(AuthnError::IssuedInFuture)
        );
        assert_eq!(
            check_claims(&s, &claims(json!({"iat": "yesterday"})), now + 60, now),
            Err(AuthnError::Claim("iat".into()))
        );
    }

    #[test]
    fn lifetime_bound_needs_iat_and_holds_exactly() {
        let s = settings(Some(3600), &[]);
        let now = 1_000_000;
        assert_eq!(
            check_claims(&s, &claims(json!({"iat": now})), now + 3600, now),
            Ok(())
        );
        assert_eq!(
            check_claims(&s, &claims(json!({"iat": now})), now + 3601, now),
            Err(AuthnError::LifetimeTooLong)
        );
        assert_eq!(
            check_claims(&s, &claims(json!({})), now + 60, now),
            Err(AuthnError::Claim("iat".into()))
        );
    }

    #[test]
    fn required_claims_must_be_present_and_not_null() {
        let s = settings(None, &["groups", "email_verified"]);
        let now = 1_000_000;
        let ok = claims(json!({"groups": [], "email_verified": false}));
        assert_eq!(check_claims(&s, &ok, now + 60, now), Ok(()));
        let missing = claims(json!({"groups": null, "email_verified": true}));
        assert_eq!(
            check_claims(&s, &missing, now + 60, now),
            Err(AuthnError::Claim("groups".into()))
        );
    }

    #[test]
    fn the_gerrit_account_has_the_declared_form_whatever_the_json_type() {
        use GerritAccount::{Email, Number, Username};
        let account = |form, claim: Option<&str>, value: Value| {
            let mut s = settings(None, &[]);
            s.gerrit_account_form = form;
            s.gerrit_account_claim = claim.map(str::to_string);
            let c = claims(json!({"sub": "alice", "acct": value}));
            identity_from(&s, c, &BTreeSet::new()).map(|id| id.gerrit_account)
        };
        // Without a claim of its own, the user claim, as a username.
        assert_eq!(
            account(AccountForm::Username, None, json!(null)),
            Ok(Username("alice".into()))
        );
        for digits in [json!(1000099), json!("1000099")] {
            assert_eq!(
                account(AccountForm::Username, Some("acct"), digits.clone()),
                Ok(Username("1000099".into())),
                "{digits}"
            );
            assert_eq!(
                account(AccountForm::AccountId, Some("acct"), digits.clone()),
                Ok(Number(1000099)),
                "{digits}"
            );
        }
        assert_eq!(
            account(AccountForm::Email, Some("acct"), json!("a@example.com")),
            Ok(Email("a@example.com".into()))
        );
        for bad in [
            json!("alice"),
            json!(""),
            json!(-5),
            json!(1.5),
            json!(null),
        ] {
            assert_eq!(
                account(AccountForm::AccountId, Some("acct"), bad.clone()),
                Err(AuthnError::Claim("acct".into())),
                "{bad}"
            );
        }
    }
}
