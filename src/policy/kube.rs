//! Kubernetes API request attributes, derived the way the kube-apiserver derives them.
//!
//! [`parse`] ports `RequestInfoFactory.NewRequestInfo`
//! (`k8s.io/apiserver/pkg/endpoints/request/requestinfo.go`, with kube-apiserver's `api` and
//! `apis` prefixes) and the pieces of Go's `net/url` and apimachinery it relies on, so that a
//! policy on these attributes sees what RBAC sees:
//!
//! - The path is percent-decoded as a whole before it is split, as Go's `URL.Path` is: `%2F`
//!   separates segments for the apiserver too. `+` stays `+` in a path. Empty segments
//!   (`/api/v1//pods`) are kept, as `strings.Split` keeps them.
//! - The query is read like `url.ParseQuery`: pairs split on `&`, a pair holding `;` or a
//!   malformed escape dropped, `+` is a space, the first value of a key counts.
//! - `watch` is true unless its first value is `0` or `false` in any case; `watch=` and a bare
//!   `watch` mean true, as `Convert_Slice_string_To_bool` has it.
//! - A `fieldSelector` requiring `metadata.name` names the object of a list or watch, as
//!   `fields.ParseSelector(..).RequiresExactMatch` finds it, if it is a valid path segment.
//!
//! Where this module cannot follow the apiserver exactly, it leans towards denying:
//!
//! - What the apiserver refuses before authorizing (a malformed request line, `watch` or
//!   `proxy` with nothing after it), what a `String` cannot hold (non-UTF-8 after decoding),
//!   and what depends on the apiserver's Go version or on a part of the query not reproduced
//!   here is [`KubeRequest::Invalid`], which callers deny. See [`InvalidReason`].
//! - The field selector's name is only taken when the whole query is known to decode. Next to
//!   a non-empty `labelSelector` (not parsed here) or a parameter `ListOptions` lacks (a newer
//!   apiserver may decode it, and fail), it is left out: a request without a name matches
//!   fewer rules, those that allow any name.

/// What the apiserver would see in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeRequest {
    /// A request for an API resource.
    Resource(ResourceRequest),
    /// Any other path (/healthz, /version, /openapi/v2, /api, /apis/apps, ...).
    NonResource {
        /// The lower-cased HTTP method: `get`, `post`, `head`, ...
        verb: String,
        /// The percent-decoded path, which RBAC matches `nonResourceURLs` against.
        path: String,
    },
    /// A request that cannot be classified for sure; deny it.
    Invalid(InvalidReason),
}

/// Why a request is [`KubeRequest::Invalid`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidReason {
    /// Not a request Go's HTTP server passes on (it answers 400): the method is not an HTTP
    /// token; the path is empty or starts with neither `/` nor is `*`; there is a control
    /// character or a malformed `%` escape; or the path holds a `?` (the query goes in
    /// `query`).
    Malformed,
    /// `watch` or `proxy` right after the version with nothing after it (`/api/v1/watch`):
    /// the apiserver fails such a request (500) before authorizing it.
    NoTarget,
    /// Something the apiserver would authorize on (group, version, namespace, resource,
    /// subresource, name, non-resource path) is not UTF-8 once percent-decoded.
    NotUtf8,
    /// For a list or watch, the apiserver's answer depends on its Go version or on a
    /// parameter not parsed here: 10,000 query parameters or more, or a `watch` value its two
    /// readings of `watch` disagree on.
    Ambiguous,
}

/// A request for an API resource: the attributes RBAC matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRequest {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`,
    /// `proxy`, or `""` for a method the apiserver has no verb for.
    pub verb: String,
    /// The API group, `""` for the core group (`/api`).
    pub api_group: String,
    /// The API version: `v1`, `v1beta1`, ...
    pub api_version: String,
    /// The namespace; `None` for cluster-scoped requests and lists across namespaces.
    pub namespace: Option<String>,
    /// The resource: `pods`, `deployments`, ...
    pub resource: String,
    /// The subresource: `log`, `exec`, `status`, `scale`, `proxy`, ...
    pub subresource: Option<String>,
    /// The object's name, from the path or from a `metadata.name` field selector.
    pub name: Option<String>,
}

/// Classifies a request as the kube-apiserver would.
///
/// `method` as sent (case-sensitive), `path` as sent (percent-encoded, without the query),
/// `query` as sent (without the `?`, maybe empty). Never panics.
pub fn parse(method: &str, path: &str, query: &str) -> KubeRequest {
    classify(method, path, query).unwrap_or_else(KubeRequest::Invalid)
}

fn classify(method: &str, path: &str, query: &str) -> Result<KubeRequest, InvalidReason> {
    if !is_request_line(method, path, query) {
        return Err(InvalidReason::Malformed);
    }
    let decoded = unescape(path.as_bytes(), false).ok_or(InvalidReason::Malformed)?;
    let parts = split_path(&decoded);

    // `/api/{version}/...` or `/apis/{group}/{version}/...` with at least one part after the
    // version; anything shorter (`/api/v1`, `/apis/apps`) is discovery, a non-resource path.
    let (group, version, rest): (&[u8], &[u8], &[&[u8]]) = match parts.as_slice() {
        [api, version, rest @ ..] if *api == b"api" && !rest.is_empty() => (b"", version, rest),
        [apis, group, version, rest @ ..] if *apis == b"apis" && !rest.is_empty() => {
            (group, version, rest)
        }
        _ => {
            return Ok(KubeRequest::NonResource {
                verb: method.to_ascii_lowercase(),
                path: text(&decoded)?,
            })
        }
    };

    // The deprecated `/watch/...` and `/proxy/...` forms carry the verb in the path.
    let special = rest
        .split_first()
        .and_then(|(first, target)| Some((special_verb(first)?, target)));
    let (mut verb, rest) = match special {
        Some((_, [])) => return Err(InvalidReason::NoTarget),
        Some((verb, target)) => (verb, target),
        None => (method_verb(method), rest),
    };

    // `namespaces/{ns}/{resource}/...` is a namespaced request, unless the part after the
    // namespace is one of the namespace's own subresources (`namespaces/foo/status`): then
    // the object is the namespace itself, and it keeps `namespace` set to its own name.
    let (namespace, parts): (&[u8], &[&[u8]]) = match rest {
        [first, ns, tail @ ..] if *first == b"namespaces" => match tail.first() {
            Some(next) if !is_namespace_subresource(next) => (ns, tail),
            _ => (ns, rest),
        },
        _ => (b"", rest),
    };

    let part = |i: usize| parts.get(i).copied().unwrap_or_default();
    let mut name = optional(part(1))?;
    // After `proxy/`, what follows the name is the proxied path, not a subresource.
    let subresource = if verb == "proxy" {
        None
    } else {
        optional(part(2))?
    };

    if name.is_none() && verb == "get" {
        let (watch, selected) = list_or_watch(query)?;
        verb = if watch { "watch" } else { "list" };
        name = selected;
    }
    if name.is_none() && verb == "delete" {
        verb = "deletecollection";
    }

    Ok(KubeRequest::Resource(ResourceRequest {
        verb: verb.to_string(),
        api_group: text(group)?,
        api_version: text(version)?,
        namespace: optional(namespace)?,
        resource: text(part(0))?,
        subresource,
        name,
    }))
}

/// Whether Go's HTTP server would hand this request to the apiserver at all.
fn is_request_line(method: &str, path: &str, query: &str) -> bool {
    let is_token = !method.is_empty()
        && method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    let target = path.starts_with('/') || (path == "*" && query.is_empty());
    let control = path
        .bytes()
        .chain(query.bytes())
        .any(|b| b < b' ' || b == 0x7f);
    is_token && target && !control && !path.contains('?')
}

/// The verb for a method, when the path does not give one. Methods are case-sensitive.
fn method_verb(method: &str) -> &'static str {
    match method {
        "POST" => "create",
        "GET" | "HEAD" => "get",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "",
    }
}

fn special_verb(part: &[u8]) -> Option<&'static str> {
    match part {
        b"watch" => Some("watch"),
        b"proxy" => Some("proxy"),
        _ => None,
    }
}

fn is_namespace_subresource(part: &[u8]) -> bool {
    part == b"status" || part == b"finalize"
}

fn text(bytes: &[u8]) -> Result<String, InvalidReason> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| InvalidReason::NotUtf8)
}

/// The apiserver treats an empty namespace, name or subresource as none.
fn optional(bytes: &[u8]) -> Result<Option<String>, InvalidReason> {
    if bytes.is_empty() {
        Ok(None)
    } else {
        text(bytes).map(Some)
    }
}

/// Go's `url.unescape`: a `%` not followed by two hex digits rejects the whole string; `+`
/// is a space only in a query.
fn unescape(s: &[u8], plus_is_space: bool) -> Option<Vec<u8>> {
    let hex = |b: Option<&u8>| b.and_then(|&b| (b as char).to_digit(16)).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'%' => {
                let (hi, lo) = (hex(bytes.next())?, hex(bytes.next())?);
                out.push((hi << 4) | lo);
            }
            b'+' if plus_is_space => out.push(b' '),
            _ => out.push(b),
        }
    }
    Some(out)
}

/// The apiserver's `splitPath`: leading and trailing slashes trimmed, empty segments kept.
fn split_path(path: &[u8]) -> Vec<&[u8]> {
    let mut trimmed = path;
    while let [b'/', rest @ ..] = trimmed {
        trimmed = rest;
    }
    while let [rest @ .., b'/'] = trimmed {
        trimmed = rest;
    }
    if trimmed.is_empty() {
        return Vec::new();
    }
    trimmed.split(|&b| b == b'/').collect()
}

/// A decoded query parameter.
type Param = (Vec<u8>, Vec<u8>);

/// The query as `url.ParseQuery` reads it, in order.
fn query_params(query: &str) -> Vec<Param> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.contains(';'))
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((
                unescape(key.as_bytes(), true)?,
                unescape(value.as_bytes(), true)?,
            ))
        })
        .collect()
}

/// The first value of `key`.
fn first<'a>(params: &'a [Param], key: &str) -> Option<&'a [u8]> {
    params
        .iter()
        .find(|(k, _)| k == key.as_bytes())
        .map(|(_, v)| v.as_slice())
}

/// Go releases with the fix for CVE-2025-61726 drop a query with more parameters than this
/// altogether (`GODEBUG=urlmaxqueryparams`), so `watch` and `fieldSelector` vanish; older
/// ones read them. Which Go the apiserver was built with is unknown here.
const GO_MAX_QUERY_PARAMS: usize = 10_000;

/// For a `get` without a name: whether it is a watch (else a list), and the name a
/// `metadata.name` field selector gives it.
fn list_or_watch(query: &str) -> Result<(bool, Option<String>), InvalidReason> {
    // Counting `;` too, and failing at the limit itself, errs on the side of caution.
    let separators = query.bytes().filter(|&b| b == b'&' || b == b';').count();
    if separators + 1 >= GO_MAX_QUERY_PARAMS {
        return Err(InvalidReason::Ambiguous);
    }
    let params = query_params(query);
    // The list options decoder reads `watch` with `strings.EqualFold`; when decoding fails,
    // the apiserver reads it again with `strings.ToLower`. Only `ſ` (U+017F, which folds to
    // `s`) tells them apart.
    let watch = first(&params, "watch");
    let decoded_watch = watch.is_some_and(|v| !(v == b"0" || equal_fold_false(v)));
    let fallback_watch = watch.is_some_and(|v| !(v == b"0" || v.eq_ignore_ascii_case(b"false")));
    match decode_list_options(&params) {
        ListOptions::Decoded(name) => Ok((decoded_watch, selector_name(name)?)),
        ListOptions::Failed => Ok((fallback_watch, None)),
        // Without a name fewer rules match (not those limited to names): this only denies more.
        ListOptions::Unknown if decoded_watch == fallback_watch => Ok((decoded_watch, None)),
        ListOptions::Unknown => Err(InvalidReason::Ambiguous),
    }
}

/// How the apiserver's list options decoder (`ParameterCodec.DecodeParameters`) fares.
enum ListOptions {
    /// It succeeds; this is the value its field selector requires of `metadata.name`.
    Decoded(Option<Vec<u8>>),
    /// It fails; the apiserver then reads `watch` on its own and takes no name.
    Failed,
    /// It may fail: a label selector (not parsed here) or an unknown parameter, which a
    /// newer apiserver may decode, is present.
    Unknown,
}

/// The `ListOptions` parameters whose decoding cannot fail or is checked here.
const LIST_OPTIONS: [&str; 10] = [
    "watch",
    "allowWatchBookmarks",
    "resourceVersion",
    "resourceVersionMatch",
    "continue",
    "sendInitialEvents",
    "fieldSelector",
    "labelSelector",
    "limit",
    "timeoutSeconds",
];

fn decode_list_options(params: &[Param]) -> ListOptions {
    let is_int64 = |key| {
        first(params, key)
            .is_none_or(|v| std::str::from_utf8(v).is_ok_and(|s| s.parse::<i64>().is_ok()))
    };
    let selected = first(params, "fieldSelector").map_or(Ok(None), field_selector_name);
    match selected {
        Ok(name) if is_int64("limit") && is_int64("timeoutSeconds") => {
            let no_labels = first(params, "labelSelector").is_none_or(<[u8]>::is_empty);
            let known = params
                .iter()
                .all(|(k, _)| LIST_OPTIONS.iter().any(|o| o.as_bytes() == k));
            if no_labels && known {
                ListOptions::Decoded(name)
            } else {
                ListOptions::Unknown
            }
        }
        _ => ListOptions::Failed,
    }
}

/// The apiserver takes a field selector's name only if it could be a path segment.
fn selector_name(name: Option<Vec<u8>>) -> Result<Option<String>, InvalidReason> {
    match name {
        Some(n) if n != b"." && n != b".." && !n.contains(&b'/') && !n.contains(&b'%') => {
            optional(&n)
        }
        _ => Ok(None),
    }
}

/// Go's `strings.EqualFold(v, "false")`.
fn equal_fold_false(v: &[u8]) -> bool {
    let Ok(v) = std::str::from_utf8(v) else {
        return false;
    };
    let mut chars = v.chars();
    "false".chars().all(|want| {
        chars
            .next()
            .is_some_and(|c| c.to_ascii_lowercase() == want || (want == 's' && c == 'ſ'))
    }) && chars.next().is_none()
}

/// A field selector `fields.ParseSelector` rejects.
struct BadSelector;

/// The value a field selector requires of `metadata.name`, found the way
/// `fields.ParseSelector(s).RequiresExactMatch("metadata.name")` finds it: terms split on
/// unescaped commas and sorted, every term parsed, the first `=` or `==` term on the field
/// wins.
fn field_selector_name(selector: &[u8]) -> Result<Option<Vec<u8>>, BadSelector> {
    let mut escaped = false;
    let mut terms: Vec<&[u8]> = selector
        .split(|&b| {
            let split = !escaped && b == b',';
            escaped = !escaped && b == b'\\';
            split
        })
        .filter(|term| !term.is_empty())
        .collect();
    terms.sort_unstable();
    let mut name = None;
    for term in terms {
        let (field, op, value) = split_term(term).ok_or(BadSelector)?;
        let value = unescape_selector_value(value)?;
        if name.is_none() && op != "!=" && field == b"metadata.name" {
            name = Some(value);
        }
    }
    Ok(name)
}

/// `field`, operator, `value`, split at the first operator; `!=` is tried before `==` before
/// `=` at each position.
fn split_term(term: &[u8]) -> Option<(&[u8], &'static str, &[u8])> {
    (0..term.len()).find_map(|i| {
        let (field, rest) = term.split_at_checked(i)?;
        ["!=", "==", "="]
            .into_iter()
            .find_map(|op| Some((field, op, rest.strip_prefix(op.as_bytes())?)))
    })
}

/// `fields.UnescapeValue`: `\\`, `\,` and `\=` stand for the character; any other escape, or
/// a bare `,` or `=`, is an error. Like Go, a value with none of these is returned as is,
/// and one with any is read as UTF-8, each invalid byte becoming U+FFFD.
fn unescape_selector_value(value: &[u8]) -> Result<Vec<u8>, BadSelector> {
    if !value.iter().any(|b| matches!(b, b'\\' | b',' | b'=')) {
        return Ok(value.to_vec());
    }
    let mut out = String::with_capacity(value.len());
    let mut escaped = false;
    for chunk in value.utf8_chunks() {
        let invalid = chunk.invalid().iter().map(|_| char::REPLACEMENT_CHARACTER);
        for c in chunk.valid().chars().chain(invalid) {
            match (escaped, c) {
                (true, '\\' | ',' | '=') => {
                    out.push(c);
                    escaped = false;
                }
                (true, _) | (false, ',' | '=') => return Err(BadSelector),
                (false, '\\') => escaped = true,
                (false, _) => out.push(c),
            }
        }
    }
    if escaped {
        Err(BadSelector)
    } else {
        Ok(out.into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resource request: `group_version` is `v1` or `apps/v1`, `resource` is `pods` or
    /// `pods/log`, and `""` is no namespace or no name.
    fn res(verb: &str, group_version: &str, ns: &str, resource: &str, name: &str) -> KubeRequest {
        let (group, version) = group_version
            .rsplit_once('/')
            .unwrap_or(("", group_version));
        let (resource, subresource) = match resource.split_once('/') {
            Some((resource, sub)) => (resource, Some(sub.to_string())),
            None => (resource, None),
        };
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        KubeRequest::Resource(ResourceRequest {
            verb: verb.to_string(),
            api_group: group.to_string(),
            api_version: version.to_string(),
            namespace: some(ns),
            resource: resource.to_string(),
            subresource,
            name: some(name),
        })
    }

    fn non(verb: &str, path: &str) -> KubeRequest {
        KubeRequest::NonResource {
            verb: verb.to_string(),
            path: path.to_string(),
        }
    }

    /// Checks a table of `METHOD path[?query] => expected` rows (`#` starts a comment row).
    ///
    /// Expected is `verb group/version namespace resource[/subresource] name` for a resource
    /// request, with `-` for an empty verb, namespace, resource or name; `verb path` for a non-resource
    /// request; or the name of an [`InvalidReason`].
    fn check(table: &str) {
        let rows = table.lines().map(str::trim);
        for row in rows.filter(|r| !r.is_empty() && !r.starts_with('#')) {
            let (request, expected) = row.split_once(" => ").expect("`request => expected`");
            let (method, target) = request.trim().split_once(' ').expect("`METHOD path`");
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            assert_eq!(parse(method, path, query), expectation(expected), "{row}");
        }
    }

    fn expectation(expected: &str) -> KubeRequest {
        let dash = |s: &str| if s == "-" { "" } else { s }.to_string();
        match expected.split_whitespace().collect::<Vec<_>>().as_slice() {
            [verb, gv, ns, resource, name] => {
                res(&dash(verb), gv, &dash(ns), &dash(resource), &dash(name))
            }
            [verb, path] => non(verb, path),
            ["Malformed"] => KubeRequest::Invalid(InvalidReason::Malformed),
            ["NoTarget"] => KubeRequest::Invalid(InvalidReason::NoTarget),
            ["NotUtf8"] => KubeRequest::Invalid(InvalidReason::NotUtf8),
            ["Ambiguous"] => KubeRequest::Invalid(InvalidReason::Ambiguous),
            _ => panic!("bad expectation {expected:?}"),
        }
    }

    #[test]
    fn core_and_named_groups_give_group_and_version() {
        check(
            "
            GET /api/v1/pods                                         => list v1 - pods -
            GET /api/v1/namespaces/team-a/pods/web-0                 => get v1 team-a pods web-0
            GET /apis/apps/v1/namespaces/team-a/deployments/web      => get apps/v1 team-a deployments web
            GET /apis/apps/v1/deployments                            => list apps/v1 - deployments -
            GET /apis/batch/v1beta1/namespaces/x/cronjobs            => list batch/v1beta1 x cronjobs -
            # A custom resource is just another group.
            GET /apis/stable.example.com/v1/namespaces/x/crontabs    => list stable.example.com/v1 x crontabs -
            POST /apis/stable.example.com/v1/namespaces/x/crontabs   => create stable.example.com/v1 x crontabs -
            PATCH /apis/stable.example.com/v1/namespaces/x/crontabs/c1/status => patch stable.example.com/v1 x crontabs/status c1
            ",
        );
    }

    #[test]
    fn cluster_scoped_resources_have_no_namespace() {
        check(
            "
            GET /api/v1/nodes/n1                                     => get v1 - nodes n1
            GET /api/v1/nodes                                        => list v1 - nodes -
            PATCH /api/v1/nodes/n1/status                            => patch v1 - nodes/status n1
            GET /apis/rbac.authorization.k8s.io/v1/clusterroles      => list rbac.authorization.k8s.io/v1 - clusterroles -
            PUT /apis/rbac.authorization.k8s.io/v1/clusterroles/admin => update rbac.authorization.k8s.io/v1 - clusterroles admin
            POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews => create authorization.k8s.io/v1 - selfsubjectaccessreviews -
            ",
        );
    }

    #[test]
    fn methods_give_verbs_and_other_methods_give_none() {
        check(
            "
            GET /api/v1/namespaces/x/pods/p                          => get v1 x pods p
            HEAD /api/v1/namespaces/x/pods/p                         => get v1 x pods p
            POST /api/v1/namespaces/x/pods                           => create v1 x pods -
            PUT /api/v1/namespaces/x/pods/p                          => update v1 x pods p
            PATCH /api/v1/namespaces/x/pods/p                        => patch v1 x pods p
            DELETE /api/v1/namespaces/x/pods/p                       => delete v1 x pods p
            OPTIONS /api/v1/namespaces/x/pods/p                      => - v1 x pods p
            CONNECT /api/v1/namespaces/x/pods/p                      => - v1 x pods p
            PROPFIND /api/v1/namespaces/x/pods/p                     => - v1 x pods p
            # Methods are case-sensitive, as in the apiserver's switch on req.Method.
            get /api/v1/namespaces/x/pods/p                          => - v1 x pods p
            Delete /api/v1/namespaces/x/pods                         => - v1 x pods -
            ",
        );
    }

    #[test]
    fn the_part_after_the_name_is_the_subresource() {
        check(
            "
            GET /api/v1/namespaces/x/pods/p/log?container=c          => get v1 x pods/log p
            POST /api/v1/namespaces/x/pods/p/exec?command=sh         => create v1 x pods/exec p
            # Websocket clients upgrade a GET.
            GET /api/v1/namespaces/x/pods/p/exec?command=sh          => get v1 x pods/exec p
            POST /api/v1/namespaces/x/pods/p/portforward             => create v1 x pods/portforward p
            POST /api/v1/namespaces/x/pods/p/eviction                => create v1 x pods/eviction p
            GET /apis/apps/v1/namespaces/x/deployments/web/scale     => get apps/v1 x deployments/scale web
            PUT /apis/apps/v1/namespaces/x/deployments/web/scale     => update apps/v1 x deployments/scale web
            PATCH /api/v1/namespaces/x/pods/p/status                 => patch v1 x pods/status p
            # Parts after the subresource are not looked at.
            GET /api/v1/namespaces/x/pods/p/log/more/parts           => get v1 x pods/log p
            ",
        );
    }

    #[test]
    fn the_namespace_object_is_named_and_scoped_by_itself() {
        check(
            "
            GET /api/v1/namespaces                                   => list v1 - namespaces -
            POST /api/v1/namespaces                                  => create v1 - namespaces -
            GET /api/v1/namespaces/team-a                            => get v1 team-a namespaces team-a
            DELETE /api/v1/namespaces/team-a                         => delete v1 team-a namespaces team-a
            GET /api/v1/namespaces/foo/status                        => get v1 foo namespaces/status foo
            PUT /api/v1/namespaces/foo/status                        => update v1 foo namespaces/status foo
            PUT /api/v1/namespaces/foo/finalize                      => update v1 foo namespaces/finalize foo
            # Any other part after the namespace is a resource in it.
            GET /api/v1/namespaces/foo/secrets                       => list v1 foo secrets -
            GET /api/v1/namespaces/foo/statuses                      => list v1 foo statuses -
            ",
        );
    }

    #[test]
    fn get_without_a_name_is_a_list_or_a_watch_by_the_query() {
        check(
            "
            GET /api/v1/namespaces/x/pods                            => list v1 x pods -
            GET /api/v1/namespaces/x/pods?limit=500&resourceVersion=0 => list v1 x pods -
            GET /api/v1/namespaces/x/pods?watch=true                 => watch v1 x pods -
            GET /api/v1/namespaces/x/pods?watch=1                    => watch v1 x pods -
            GET /api/v1/namespaces/x/pods?watch=false                => list v1 x pods -
            GET /api/v1/namespaces/x/pods?watch=0                    => list v1 x pods -
            GET /api/v1/namespaces/x/pods?watch=FALSE                => list v1 x pods -
            GET /api/v1/namespaces/x/pods?watch=False                => list v1 x pods -
            HEAD /api/v1/namespaces/x/pods?watch=true                => watch v1 x pods -
            # Anything but 0 or false is true, the empty value included.
            GET /api/v1/namespaces/x/pods?watch=                     => watch v1 x pods -
            GET /api/v1/namespaces/x/pods?watch                      => watch v1 x pods -
            GET /api/v1/namespaces/x/pods?watch=no                   => watch v1 x pods -
            GET /api/v1/namespaces/x/pods?watch=00                   => watch v1 x pods -
            GET /api/v1/namespaces/x/pods?watch=+false               => watch v1 x pods -
            # The first value counts.
            GET /api/v1/namespaces/x/pods?watch=false&watch=true     => list v1 x pods -
            GET /api/v1/namespaces/x/pods?watch=true&watch=false     => watch v1 x pods -
            # Keys and values are percent-decoded; keys are case-sensitive.
            GET /api/v1/namespaces/x/pods?w%61tch=1                  => watch v1 x pods -
            GET /api/v1/namespaces/x/pods?watch=%46alse              => list v1 x pods -
            GET /api/v1/namespaces/x/pods?Watch=true                 => list v1 x pods -
            # Go's strings.EqualFold folds U+017F (ſ) to s.
            GET /api/v1/namespaces/x/pods?watch=FAL%C5%BFE           => list v1 x pods -
            # Go drops a pair with a semicolon or a bad escape.
            GET /api/v1/namespaces/x/pods?watch=true;                => list v1 x pods -
            GET /api/v1/namespaces/x/pods?watch=1;x=2                => list v1 x pods -
            GET /api/v1/namespaces/x/pods?watch=%zz                  => list v1 x pods -
            GET /api/v1/namespaces/x/pods?watch=%zz&watch=1          => watch v1 x pods -
            GET /api/v1/namespaces/x/pods?a;b&watch=1                => watch v1 x pods -
            GET /api/v1/namespaces/x/pods?&&watch=true&&             => watch v1 x pods -
            # With a name in the path the query is not read.
            GET /api/v1/namespaces/x/pods/p?watch=true               => get v1 x pods p
            ",
        );
    }

    #[test]
    fn watch_in_the_path_is_the_verb() {
        check(
            "
            GET /api/v1/watch/namespaces/x/pods                      => watch v1 x pods -
            GET /api/v1/watch/pods                                   => watch v1 - pods -
            GET /api/v1/watch/namespaces/x/pods/p                    => watch v1 x pods p
            GET /api/v1/watch/namespaces                             => watch v1 - namespaces -
            GET /apis/apps/v1/watch/namespaces/x/deployments?watch=false => watch apps/v1 x deployments -
            # Whatever the method.
            POST /api/v1/watch/namespaces/x/pods                     => watch v1 x pods -
            # A field selector does not name the object of a watch in the path.
            GET /api/v1/watch/namespaces/x/pods?fieldSelector=metadata.name%3Dp => watch v1 x pods -
            ",
        );
    }

    #[test]
    fn proxy_is_a_subresource_or_a_verb_in_the_path() {
        check(
            "
            GET /api/v1/namespaces/x/pods/p/proxy/some/path          => get v1 x pods/proxy p
            POST /api/v1/namespaces/x/pods/p/proxy/some/path         => create v1 x pods/proxy p
            GET /api/v1/namespaces/x/services/https:web:443/proxy/   => get v1 x services/proxy https:web:443
            GET /api/v1/nodes/n1/proxy/metrics                       => get v1 - nodes/proxy n1
            # With proxy in front, what follows the name is the proxied path.
            GET /api/v1/proxy/namespaces/x/pods/p/some/path          => proxy v1 x pods p
            GET /api/v1/proxy/nodes/n1/stats                         => proxy v1 - nodes n1
            DELETE /api/v1/proxy/namespaces/x/pods                   => proxy v1 x pods -
            ",
        );
    }

    #[test]
    fn delete_without_a_name_is_deletecollection() {
        check(
            "
            DELETE /api/v1/namespaces/x/pods                         => deletecollection v1 x pods -
            DELETE /api/v1/namespaces/x/pods?labelSelector=app%3Dweb => deletecollection v1 x pods -
            DELETE /apis/apps/v1/namespaces/x/deployments/web        => delete apps/v1 x deployments web
            DELETE /apis/rbac.authorization.k8s.io/v1/clusterroles   => deletecollection rbac.authorization.k8s.io/v1 - clusterroles -
            # Only a list or watch takes its name from a field selector.
            DELETE /api/v1/namespaces/x/pods?fieldSelector=metadata.name%3Dp => deletecollection v1 x pods -
            ",
        );
    }

    #[test]
    fn a_metadata_name_field_selector_names_a_list_or_watch() {
        check(
            r"
            GET /api/v1/namespaces/x/pods?fieldSelector=metadata.name%3Dweb     => list v1 x pods web
            GET /api/v1/namespaces/x/pods?fieldSelector=metadata.name%3D%3Dweb  => list v1 x pods web
            GET /api/v1/nodes?fieldSelector=metadata.name%3Dn1                  => list v1 - nodes n1
            # The key ends at the first `=`, so the selector's own needs no escape.
            GET /api/v1/namespaces/x/pods?fieldSelector=metadata.name=web       => list v1 x pods web
            GET /api/v1/namespaces/x/pods?watch=true&fieldSelector=metadata.name%3Dweb => watch v1 x pods web
            # What client-go's informers send for a single object.
            GET /api/v1/namespaces/x/pods?allowWatchBookmarks=true&fieldSelector=metadata.name%3Dweb&resourceVersion=5&timeoutSeconds=300&watch=true => watch v1 x pods web
            GET /api/v1/namespaces/x/pods?fieldSelector=metadata.name%3Dweb&limit=500&resourceVersion=0 => list v1 x pods web
            GET /api/v1/namespaces/x/pods?fieldSelector=metadata.name%3Dweb&labelSelector= => list v1 x pods web
            GET /api/v1/namespaces/x/pods?fieldSelector=metadata.name%3Dweb&limit=%2B5 => list v1 x pods web
            GET /api/v1/namespaces/x/pods?fieldSelector=spec.nodeName%3Dn1%2Cmetadata.name%3Dweb => list v1 x pods web
            # Terms are sorted, every one is parsed, the first on metadata.name wins.
            GET /api/v1/namespaces/x/pods?fieldSelector=metadata.name%3Db%2Cmetadata.name%3Da => list v1 x pods a
            GET /api/v1/namespaces/x/pods?fieldSelector=metadata.name%21%3Dx%2Cmetadata.name%3Dweb => list v1 x pods web
            GET /api/v1/namespaces/x/pods?fieldSelector=metadata.name%21%3Dweb  => list v1 x pods -
            GET /api/v1/namespaces/x/pods?fieldSelector=spec.nodeName%3Dn1      => list v1 x pods -
            # Only the first fieldSelector counts.
            GET /api/v1/namespaces/x/pods?fieldSelector=metadata.name%3Da&fieldSelector=metadata.name%3Db => list v1 x pods a
            # Escaped commas and equals signs are part of the value.
            GET /api/v1/namespaces/x/pods?fieldSelector=metadata.name%3Da%5C%2Cb => list v1 x pods a,b
            GET /api/v1/namespaces/x/pods?fieldSelector=metadata.name%3Da%5C%3Db => list v1 x pods a=b
            # Names that cannot be path segments are left out.
            GET /api/v1/namespaces/x/pods?fieldSelector=metadata.name%3D        => list v1 x pods -
            GET /api/v1/namespaces/x/pods?fieldSelector=metadata.name%3D.       => list v1 x pods -
            GET /api/v1/namespaces/x/pods?fieldSelector=metadata.name%3D..      => list v1 x pods -
            GET /api/v1/namespaces/x/pods?fieldSelector=metadata.name%3Da%2Fb   => list v1 x pods -
            GET /api/v1/namespaces/x/pods?fieldSelector=metadata.name%3Da%25b   => list v1 x pods -
            # A selector that does not parse fails the whole decoding: no name.
            GET /api/v1/namespaces/x/pods?fieldSelector=garbage                 => list v1 x pods -
            GET /api/v1/namespaces/x/pods?fieldSelector=metadata.name%3Da%3Db   => list v1 x pods -
            GET /api/v1/namespaces/x/pods?fieldSelector=metadata.name%3Da%5Cb   => list v1 x pods -
            GET /api/v1/namespaces/x/pods?fieldSelector=metadata.name%3Dweb%5C  => list v1 x pods -
            GET /api/v1/namespaces/x/pods?fieldSelector=metadata.name%3Dweb%2Cjunk => list v1 x pods -
            # So do bad integers.
            GET /api/v1/namespaces/x/pods?fieldSelector=metadata.name%3Dweb&limit=abc => list v1 x pods -
            GET /api/v1/namespaces/x/pods?fieldSelector=metadata.name%3Dweb&timeoutSeconds= => list v1 x pods -
            # Label selectors and unknown parameters are not checked here: no name, which
            # never makes the request narrower than the apiserver sees it.
            GET /api/v1/namespaces/x/pods?fieldSelector=metadata.name%3Dweb&labelSelector=app%3Dweb => list v1 x pods -
            GET /api/v1/namespaces/x/pods?fieldSelector=metadata.name%3Dweb&pretty=true => list v1 x pods -
            # With a name in the path the selector is not read.
            GET /api/v1/namespaces/x/pods/p?fieldSelector=metadata.name%3Dq     => get v1 x pods p
            ",
        );
    }

    #[test]
    fn watch_is_read_the_fallback_way_when_decoding_fails() {
        check(
            "
            # The fallback lower-cases instead of folding: ſ is not s there.
            GET /api/v1/namespaces/x/pods?watch=FAL%C5%BFE&limit=x   => watch v1 x pods -
            GET /api/v1/namespaces/x/pods?watch=FALSE&limit=x        => list v1 x pods -
            # When decoding may fail or not, only values both readings agree on are taken.
            GET /api/v1/namespaces/x/pods?watch=FAL%C5%BFE&labelSelector=a => Ambiguous
            GET /api/v1/namespaces/x/pods?watch=false&labelSelector=a => list v1 x pods -
            GET /api/v1/namespaces/x/pods?watch=1&labelSelector=a    => watch v1 x pods -
            ",
        );
    }

    #[test]
    fn other_paths_are_non_resource_with_the_lowercased_method() {
        check(
            "
            GET /healthz                                             => get /healthz
            GET /livez/etcd                                          => get /livez/etcd
            GET /version                                             => get /version
            GET /openapi/v2                                          => get /openapi/v2
            GET /openapi/v3/apis/apps/v1                             => get /openapi/v3/apis/apps/v1
            GET /metrics                                             => get /metrics
            GET /                                                    => get /
            GET /logs/                                               => get /logs/
            GET /logs/kube-apiserver.log                             => get /logs/kube-apiserver.log
            POST /healthz                                            => post /healthz
            HEAD /healthz                                            => head /healthz
            PROPFIND /healthz?x=1                                    => propfind /healthz
            OPTIONS *                                                => options *
            # Discovery: too short to name a resource.
            GET /api                                                 => get /api
            GET /api/v1                                              => get /api/v1
            GET /api/v1/                                             => get /api/v1/
            GET /apis                                                => get /apis
            GET /apis/apps                                           => get /apis/apps
            GET /apis/apps/v1                                        => get /apis/apps/v1
            GET /apis/apps/v1/                                       => get /apis/apps/v1/
            # Prefixes are case-sensitive, and only api and apis are API prefixes.
            GET /API/v1/pods                                         => get /API/v1/pods
            GET /foo/v1/pods                                         => get /foo/v1/pods
            ",
        );
    }

    #[test]
    fn slashes_are_trimmed_and_empty_segments_kept() {
        check(
            "
            GET /api/v1/pods/                                        => list v1 - pods -
            GET /api/v1/namespaces/x/pods/p/                         => get v1 x pods p
            GET ///api/v1/pods///                                    => list v1 - pods -
            GET /api/v1//pods                                        => get v1 - - pods
            GET /api/v1/namespaces//pods                             => list v1 - pods -
            GET /api/v1/namespaces/x/pods//log                       => list v1 x pods/log -
            GET /api/v1/namespaces/x/pods/p//x                       => get v1 x pods p
            GET //                                                   => get //
            ",
        );
    }

    #[test]
    fn the_path_is_decoded_before_it_is_split() {
        check(
            "
            GET /api/v1/namespaces/team%2Da/pods                     => list v1 team-a pods -
            GET /api/%761/pods                                       => list v1 - pods -
            # An encoded slash separates segments for the apiserver too: Go decodes
            # URL.Path before the apiserver splits it.
            GET /api/v1/namespaces/a%2Fb/pods                        => get v1 a b pods
            GET /api/v1/namespaces/x/pods/web%2Fstatus               => get v1 x pods/status web
            GET /api%2Fv1%2Fpods                                     => list v1 - pods -
            GET /healthz%2Fetcd                                      => get /healthz/etcd
            # `+` is not a space in a path; a decoded `?` is just a character.
            GET /api/v1/namespaces/x/pods/a+b                        => get v1 x pods a+b
            GET /healthz%3Fverbose                                   => get /healthz?verbose
            # Dot segments are not resolved.
            GET /api/v1/namespaces/x/pods/%2e%2e/secrets             => get v1 x pods/secrets ..
            GET /api/v1/namespaces/x/pods/../secrets                 => get v1 x pods/secrets ..
            GET /api/v1/namespaces/x/pods/caf%C3%A9                  => get v1 x pods café
            GET /api/v1/namespaces/x/pods/café                       => get v1 x pods café
            # Only what the apiserver authorizes on has to be UTF-8.
            GET /api/v1/namespaces/x/pods/p/proxy/%FF                => get v1 x pods/proxy p
            ",
        );
        let spaced = parse("GET", "/api/v1/namespaces/x/pods/a%20b", "");
        assert_eq!(spaced, res("get", "v1", "x", "pods", "a b"));
    }

    #[test]
    fn requests_the_apiserver_refuses_are_invalid() {
        check(
            "
            GET api/v1/pods                                          => Malformed
            GET http://h/api/v1/pods                                 => Malformed
            GET *?x=1                                                => Malformed
            GET /api/v1/pods%                                        => Malformed
            GET /api/v1/pods%2                                       => Malformed
            GET /api/v1/pods%zz                                      => Malformed
            GET /healthz%G0                                          => Malformed
            GÉT /healthz                                             => Malformed
            GET\r /healthz                                           => Malformed
            # The apiserver answers 500 for a path verb without a target.
            GET /api/v1/watch                                        => NoTarget
            GET /api/v1/watch/                                       => NoTarget
            GET /api/v1/watch//                                      => NoTarget
            GET /api/v1/proxy                                        => NoTarget
            GET /apis/apps/v1/watch                                  => NoTarget
            GET /apis/apps/v1/proxy                                  => NoTarget
            ",
        );
        let malformed = KubeRequest::Invalid(InvalidReason::Malformed);
        for (method, path, query) in [
            ("GET", "", ""),
            ("", "/api/v1/pods", ""),
            ("GE T", "/api/v1/pods", ""),
            ("GET", "/api/v1/pods\0", ""),
            ("GET", "/api/v1/pods\x7f", ""),
            ("GET", "/api/v1/pods", "watch=1\n"),
            // The query belongs in `query`.
            ("GET", "/api/v1/pods?watch=1", ""),
        ] {
            assert_eq!(
                parse(method, path, query),
                malformed,
                "{method:?} {path:?} {query:?}"
            );
        }
    }

    #[test]
    fn values_that_are_not_utf8_are_invalid() {
        check(
            r"
            GET /api/v1/namespaces/%FF/pods                          => NotUtf8
            GET /api/v1/namespaces/x/pods/%C3                        => NotUtf8
            GET /api/v1/namespaces/x/pods/p/%FF                      => NotUtf8
            GET /apis/%FF/v1/deployments                             => NotUtf8
            GET /healthz%FF                                          => NotUtf8
            GET /api/v1/pods?fieldSelector=metadata.name%3D%FF       => NotUtf8
            # Go's selector unescaping turns invalid UTF-8 into U+FFFD once there is
            # anything to unescape.
            GET /api/v1/pods?fieldSelector=metadata.name%3D%FF%5C%5C => list v1 - pods �\
            ",
        );
    }

    #[test]
    fn ten_thousand_query_parameters_make_a_list_ambiguous() {
        let many = "a=1&".repeat(9_998) + "watch=1";
        let watch = res("watch", "v1", "", "pods", "");
        assert_eq!(parse("GET", "/api/v1/pods", &many), watch);
        let ambiguous = KubeRequest::Invalid(InvalidReason::Ambiguous);
        let too_many = "a=1&".repeat(9_999) + "watch=1";
        assert_eq!(parse("GET", "/api/v1/pods", &too_many), ambiguous);
        let semicolons = ";".repeat(10_000) + "&watch=1";
        assert_eq!(parse("GET", "/api/v1/pods", &semicolons), ambiguous);
        // The query of a named get is not read, so its size does not matter.
        let get = res("get", "v1", "", "pods", "p");
        assert_eq!(parse("GET", "/api/v1/pods/p", &too_many), get);
    }

    #[test]
    fn huge_inputs_are_handled() {
        let name = "a".repeat(1 << 20);
        let path = format!("/api/v1/namespaces/x/pods/{name}");
        assert_eq!(
            parse("GET", &path, ""),
            res("get", "v1", "x", "pods", &name)
        );
        let slashes = "/".repeat(1 << 20);
        assert_eq!(parse("GET", &slashes, ""), non("get", &slashes));
        let segments = format!("/api/v1{}", "/x".repeat(1 << 18));
        assert_eq!(
            parse("GET", &segments, ""),
            res("get", "v1", "", "x/x", "x")
        );
        let selector = format!("fieldSelector=metadata.name%3D{}", "%41".repeat(1 << 18));
        let named = res("list", "v1", "", "pods", &"A".repeat(1 << 18));
        assert_eq!(parse("GET", "/api/v1/pods", &selector), named);
    }

    #[test]
    fn odd_inputs_never_panic() {
        const METHODS: &[&str] = &["GET", "HEAD", "POST", "DELETE", "FOO", "", "g t"];
        const PATH: &[&str] = &[
            "/",
            "api",
            "apis",
            "v1",
            "apps",
            "namespaces",
            "x",
            "pods",
            "watch",
            "proxy",
            "status",
            "finalize",
            "%",
            "%2F",
            "%2f",
            "%FF",
            "%C3",
            "%zz",
            "+",
            "?",
            "..",
            "",
            "ſ",
            "\0",
            "*",
            "\\",
        ];
        const QUERY: &[&str] = &[
            "watch",
            "=",
            "&",
            ";",
            "true",
            "false",
            "FAL%C5%BFE",
            "0",
            "fieldSelector",
            "labelSelector",
            "limit",
            "metadata.name",
            "%3D",
            "%2C",
            "%5C",
            "%21",
            ",",
            "\\",
            "%FF",
            "%",
            "+",
            "x",
            "!=",
            "==",
        ];
        let verbs: Vec<&str> = super::super::kube_access::RESOURCE_VERBS
            .iter()
            .copied()
            .chain([""])
            .collect();
        let mut rng = fastrand::Rng::with_seed(7);
        let mut pick = |from: &[&str], most: usize| -> String {
            (0..rng.usize(0..=most))
                .map(|_| from[rng.usize(..from.len())])
                .collect()
        };
        for _ in 0..20_000 {
            let (method, path, query) = (pick(METHODS, 1), pick(PATH, 12), pick(QUERY, 12));
            let row = format!("{method:?} {path:?} {query:?}");
            match parse(&method, &path, &query) {
                KubeRequest::Resource(r) => {
                    assert!(verbs.contains(&r.verb.as_str()), "{row}");
                    for part in [&r.namespace, &r.subresource, &r.name] {
                        assert_ne!(part.as_deref(), Some(""), "{row}");
                    }
                }
                KubeRequest::NonResource { verb, .. } => {
                    assert_eq!(verb, method.to_ascii_lowercase(), "{row}")
                }
                KubeRequest::Invalid(_) => {}
            }
        }
    }
}
