//! `issuers[]`: claims, algorithms, the key set and its timing.

use super::*;

pub(super) fn compile_issuer(
    path: &str,
    raw: &RawIssuer,
    files: &FileResolver,
    p: &mut Problems,
) -> Option<IssuerConfig> {
    let before = p.0.len();
    if raw.issuer.is_empty() {
        p.add(format!("{path}.issuer"), "must not be empty");
    }
    if raw.audiences.is_empty() || raw.audiences.iter().any(String::is_empty) {
        p.add(
            format!("{path}.audiences"),
            "list at least one non-empty audience",
        );
    }
    if raw.user_claim.is_empty() {
        p.add(format!("{path}.user_claim"), "must not be empty");
    }
    let gerrit_account_form = match raw.gerrit_account_form.as_deref() {
        None => AccountForm::default(),
        Some(name) => AccountForm::parse(name).unwrap_or_else(|| {
            p.add(
                format!("{path}.gerrit_account_form"),
                format!("{name} is not one of {}", AccountForm::NAMES.join(", ")),
            );
            AccountForm::default()
        }),
    };
    let user_prefix = raw.user_prefix.clone().unwrap_or_default();
    if user_prefix.chars().any(|c| c.is_control()) || user_prefix.starts_with(char::is_whitespace) {
        p.add(
            format!("{path}.user_prefix"),
            "must not start with whitespace or hold control characters: it goes into headers",
        );
    }
    if !user_prefix.is_empty() && gerrit_account_form == AccountForm::AccountId {
        p.add(
            format!("{path}.user_prefix"),
            "cannot prefix an account number (`gerrit_account_form: account_id`)",
        );
    }
    let mut algorithms = Vec::new();
    if raw.algorithms.is_empty() {
        p.add(format!("{path}.algorithms"), "list at least one algorithm");
    }
    for (i, name) in raw.algorithms.iter().enumerate() {
        match Algorithm::from_str(name) {
            Ok(alg) if alg.family() != AlgorithmFamily::Hmac => algorithms.push(alg),
            Ok(_) => p.add(
                format!("{path}.algorithms[{i}]"),
                format!("{name} is symmetric; only public-key algorithms can be verified with a JWKS"),
            ),
            Err(_) => p.add(
                format!("{path}.algorithms[{i}]"),
                format!("unknown algorithm {name:?} (RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)"),
            ),
        }
    }
    let ca = raw.jwks.ca_file.as_deref().and_then(|file| {
        let shown = files.display(file);
        let bad = |reason: String| format!("{shown}: {reason}");
        let pem = match files.read(file) {
            Ok(pem) => pem,
            Err(e) => {
                p.add(
                    format!("{path}.jwks.ca_file"),
                    bad(format!("cannot read: {e}")),
                );
                return None;
            }
        };
        match reqwest::Certificate::from_pem_bundle(&pem) {
            Ok(certs) if !certs.is_empty() => Some(Arc::<[u8]>::from(pem)),
            Ok(_) => {
                p.add(
                    format!("{path}.jwks.ca_file"),
                    bad("no PEM certificate in it".into()),
                );
                None
            }
            Err(e) => {
                p.add(format!("{path}.jwks.ca_file"), bad(e.to_string()));
                None
            }
        }
    });
    if raw.jwks.ca_file.is_some() && raw.jwks.file.is_some() {
        p.add(
            format!("{path}.jwks.ca_file"),
            "only used when keys are fetched (`url` or `discovery`)",
        );
    }
    let jwks = match (&raw.jwks.url, &raw.jwks.file) {
        (None, None) if raw.jwks.discovery => http_url(&raw.issuer, &format!("{path}.issuer"), p)
            .map(|_| JwksSource::Discovery {
                issuer: raw.issuer.clone(),
                timeout: raw.jwks.timeout,
                ca: ca.clone(),
            }),
        (Some(_), None) | (None, Some(_)) if raw.jwks.discovery => {
            p.add(
                format!("{path}.jwks"),
                "set exactly one of `url`, `file` or `discovery: true`",
            );
            None
        }
        (Some(url), None) => {
            http_url(url, &format!("{path}.jwks.url"), p).map(|url| JwksSource::Url {
                url,
                timeout: raw.jwks.timeout,
                ca: ca.clone(),
            })
        }
        (None, Some(file)) => {
            let shown = files.display(file);
            match files.read(file) {
                Ok(document) => match KeySet::parse(&document) {
                    Ok(_) => Some(JwksSource::Static {
                        name: shown,
                        document: document.into(),
                    }),
                    Err(e) => {
                        p.add(format!("{path}.jwks.file"), format!("{shown}: {e}"));
                        None
                    }
                },
                Err(e) => {
                    p.add(
                        format!("{path}.jwks.file"),
                        format!("cannot read {shown}: {e}"),
                    );
                    None
                }
            }
        }
        _ => {
            p.add(
                format!("{path}.jwks"),
                "set exactly one of `url`, `file` or `discovery: true`",
            );
            None
        }
    };
    if raw.max_token_lifetime.is_some_and(|d| d.is_zero()) {
        p.add(
            format!("{path}.max_token_lifetime"),
            "must be greater than zero",
        );
    }
    for (i, claim) in raw.required_claims.iter().enumerate() {
        if claim.is_empty() {
            p.add(format!("{path}.required_claims[{i}]"), "must not be empty");
        }
    }
    let j = &raw.jwks;
    for (field, value) in [
        ("refresh_interval", j.refresh_interval),
        ("min_refresh_interval", j.min_refresh_interval),
        ("max_refresh_interval", j.max_refresh_interval),
        ("min_refetch_interval", j.min_refetch_interval),
        ("max_staleness", j.max_staleness),
        ("timeout", j.timeout),
        ("check_timeout", j.check_timeout),
    ] {
        if value.is_zero() {
            p.add(format!("{path}.jwks.{field}"), "must be greater than zero");
        }
    }
    if j.min_refresh_interval > j.max_refresh_interval {
        p.add(
            format!("{path}.jwks.min_refresh_interval"),
            "must not exceed max_refresh_interval",
        );
    }
    if p.0.len() != before {
        return None;
    }
    Some(IssuerConfig {
        settings: IssuerSettings {
            issuer: raw.issuer.clone(),
            audiences: raw.audiences.clone(),
            user_claim: raw.user_claim.clone(),
            email_claim: raw.email_claim.clone(),
            name_claim: raw.name_claim.clone(),
            gerrit_account_claim: raw.gerrit_account_claim.clone(),
            gerrit_account_form,
            user_prefix,
            algorithms,
            leeway: raw.leeway,
            max_token_lifetime: raw.max_token_lifetime,
            required_claims: raw.required_claims.clone(),
        },
        jwks: jwks?,
        timing: JwksTiming {
            refresh_interval: j.refresh_interval,
            min_refresh_interval: j.min_refresh_interval,
            max_refresh_interval: j.max_refresh_interval,
            min_refetch_interval: j.min_refetch_interval,
            max_staleness: j.max_staleness,
            check_timeout: j.check_timeout,
        },
    })
}
