//! Per-route policy: header matching, host rewrite, request and response header edits,
//! request timeout and retry overrides.
//!
//! Built once per snapshot from a [`Route`]; a route that configures none of it has no policy
//! at all (`None`), so the request path pays nothing for it. The free functions take the policy
//! and a message's headers, so that every HTTP path (hyper's and any hand-written one) applies
//! the same edits.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::{HeaderMatch, HeaderToAdd, RetryPolicy, Route};

/// A route's transformations and overrides, validated.
#[derive(Debug)]
pub(crate) struct RoutePolicy {
    /// Sent as the Host header instead of the client's.
    host_rewrite: Option<HeaderValue>,
    request_remove: Box<[HeaderName]>,
    request_add: Box<[Add]>,
    response_remove: Box<[HeaderName]>,
    response_add: Box<[Add]>,
    /// `Some(None)`: the route turns the cluster's timeout off.
    timeout: Option<Option<Duration>>,
    retries: Option<RetryPolicy>,
}

#[derive(Debug)]
struct Add {
    name: HeaderName,
    value: HeaderValue,
    append: bool,
}

/// A field of a route that is wrong: its path (`request_headers_to_add[0].name`) and why.
#[derive(Debug)]
pub(crate) struct FieldError {
    pub(crate) field: String,
    pub(crate) reason: String,
}

fn field_error(field: impl Into<String>, reason: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        reason: reason.into(),
    }
}

impl RoutePolicy {
    /// The policy of `route`, or `None` when it sets none of the policy fields.
    pub(crate) fn build(route: &Route) -> Result<Option<Self>, FieldError> {
        let host_rewrite = match &route.host_rewrite {
            Some(host) => Some(valid_host(host).map_err(|r| field_error("host_rewrite", r))?),
            None => None,
        };
        let policy = Self {
            host_rewrite,
            request_remove: names(
                &route.request_headers_to_remove,
                "request_headers_to_remove",
            )?,
            request_add: adds(&route.request_headers_to_add, "request_headers_to_add")?,
            response_remove: names(
                &route.response_headers_to_remove,
                "response_headers_to_remove",
            )?,
            response_add: adds(&route.response_headers_to_add, "response_headers_to_add")?,
            timeout: route
                .timeout_ms
                .map(|ms| (ms > 0).then(|| Duration::from_millis(ms))),
            retries: route.retries.clone(),
        };
        let empty = policy.host_rewrite.is_none()
            && policy.request_remove.is_empty()
            && policy.request_add.is_empty()
            && policy.response_remove.is_empty()
            && policy.response_add.is_empty()
            && policy.timeout.is_none()
            && policy.retries.is_none();
        Ok((!empty).then_some(policy))
    }

    /// The request timeout to apply, given the cluster's.
    pub(crate) fn request_timeout(&self, cluster: Option<Duration>) -> Option<Duration> {
        self.timeout.unwrap_or(cluster)
    }

    /// The retry policy to apply, given the cluster's.
    pub(crate) fn retries<'a>(&'a self, cluster: &'a RetryPolicy) -> &'a RetryPolicy {
        self.retries.as_ref().unwrap_or(cluster)
    }

    /// Whether [`response_headers`] changes anything, so that callers can skip it.
    pub(crate) fn edits_response(&self) -> bool {
        !self.response_remove.is_empty() || !self.response_add.is_empty()
    }
}

/// Edits the headers of a request about to go upstream: removals, then additions, then the
/// host rewrite. Call it after the proxy's own headers (X-Forwarded-*, Host) are set, so that
/// the route has the last word.
pub(crate) fn request_headers(policy: &RoutePolicy, headers: &mut HeaderMap) {
    edit(headers, &policy.request_remove, &policy.request_add);
    if let Some(host) = &policy.host_rewrite {
        headers.insert(header::HOST, host.clone());
    }
}

/// Edits the headers of a response about to go to the client: removals, then additions.
pub(crate) fn response_headers(policy: &RoutePolicy, headers: &mut HeaderMap) {
    edit(headers, &policy.response_remove, &policy.response_add);
}

fn edit(headers: &mut HeaderMap, remove: &[HeaderName], add: &[Add]) {
    for name in remove {
        headers.remove(name);
    }
    for add in add {
        if add.append {
            headers.append(add.name.clone(), add.value.clone());
        } else {
            headers.insert(add.name.clone(), add.value.clone());
        }
    }
}

/// Headers a route may not add or remove: they frame the message or describe the connection,
/// and the proxy sets them itself (Host has `host_rewrite`).
const RESERVED: [&str; 10] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "http2-settings",
];

fn header_name(name: &str, field: &str) -> Result<HeaderName, FieldError> {
    let parsed = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| field_error(field, format!("{name:?} is not a valid header name")))?;
    if RESERVED.contains(&parsed.as_str()) {
        return Err(field_error(
            field,
            format!("{name:?} is managed by the proxy and cannot be changed by a route"),
        ));
    }
    Ok(parsed)
}

fn names(list: &[String], field: &str) -> Result<Box<[HeaderName]>, FieldError> {
    list.iter()
        .enumerate()
        .map(|(i, name)| header_name(name, &format!("{field}[{i}]")))
        .collect()
}

fn adds(list: &[HeaderToAdd], field: &str) -> Result<Box<[Add]>, FieldError> {
    list.iter()
        .enumerate()
        .map(|(i, add)| {
            let name = header_name(&add.name, &format!("{field}[{i}].name"))?;
            let value = HeaderValue::from_str(&add.value).map_err(|_| {
                field_error(
                    format!("{field}[{i}].value"),
                    "a header value must be visible ASCII, spaces or tabs",
                )
            })?;
            Ok(Add {
                name,
                value,
                append: add.append,
            })
        })
        .collect()
}

/// A host (optionally with a port) usable as a Host header.
fn valid_host(host: &str) -> Result<HeaderValue, String> {
    if host.is_empty() {
        return Err("empty host".into());
    }
    // An authority without userinfo is exactly what a Host header may hold (RFC 9110 7.2).
    match host.parse::<http::uri::Authority>() {
        Ok(authority) if !authority.as_str().contains('@') => {
            HeaderValue::from_str(host).map_err(|_| format!("{host:?} is not a valid host"))
        }
        _ => Err(format!("{host:?} is not a valid host[:port]")),
    }
}

/// A compiled condition on one request header.
#[derive(Debug)]
pub(crate) struct HeaderMatcher {
    name: HeaderName,
    test: Test,
}

#[derive(Debug)]
enum Test {
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
    Regex(regex::bytes::Regex),
    Present,
    Absent,
}

/// Bound on a compiled route regex, so that a config cannot make the proxy build a huge
/// automaton.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl HeaderMatcher {
    /// Validates `config`; `field` is its path for errors (`headers[0]`).
    pub(crate) fn build(config: &HeaderMatch, field: &str) -> Result<Self, FieldError> {
        let name = HeaderName::from_bytes(config.name.as_bytes()).map_err(|_| {
            field_error(
                format!("{field}.name"),
                format!("{:?} is not a valid header name", config.name),
            )
        })?;
        let given = [
            config.exact.is_some(),
            config.prefix.is_some(),
            config.regex.is_some(),
            config.present.is_some(),
        ]
        .into_iter()
        .filter(|&set| set)
        .count();
        if given != 1 {
            return Err(field_error(
                field,
                "give exactly one of exact, prefix, regex and present",
            ));
        }
        let test = if let Some(exact) = &config.exact {
            Test::Exact(exact.as_bytes().into())
        } else if let Some(prefix) = &config.prefix {
            Test::Prefix(prefix.as_bytes().into())
        } else if let Some(pattern) = &config.regex {
            let regex = regex::bytes::RegexBuilder::new(&format!("^(?:{pattern})$"))
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| field_error(format!("{field}.regex"), e.to_string()))?;
            Test::Regex(regex)
        } else if config.present == Some(false) {
            Test::Absent
        } else {
            Test::Present
        };
        Ok(Self { name, test })
    }

    /// Whether `headers` satisfy the condition: some value of the header passes the test.
    pub(crate) fn matches(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(&self.name).iter();
        match &self.test {
            Test::Present => values.next().is_some(),
            Test::Absent => values.next().is_none(),
            Test::Exact(want) => values.any(|v| v.as_bytes() == &**want),
            Test::Prefix(want) => values.any(|v| v.as_bytes().starts_with(want)),
            Test::Regex(regex) => values.any(|v| regex.is_match(v.as_bytes())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(json: &str) -> Result<HeaderMatcher, FieldError> {
        HeaderMatcher::build(&serde_json::from_str(json).unwrap(), "headers[0]")
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for &(name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn header_matches() {
        let exact = matcher(r#"{"name":"X-Env","exact":"canary"}"#).unwrap();
        assert!(exact.matches(&headers(&[("x-env", "canary")])));
        assert!(exact.matches(&headers(&[("x-env", "prod"), ("x-env", "canary")])));
        assert!(!exact.matches(&headers(&[("x-env", "canary2")])));
        assert!(!exact.matches(&headers(&[])));

        let prefix = matcher(r#"{"name":"x-v","prefix":"v2"}"#).unwrap();
        assert!(prefix.matches(&headers(&[("x-v", "v2.1")])));
        assert!(!prefix.matches(&headers(&[("x-v", "v1")])));

        let regex = matcher(r#"{"name":"x-u","regex":"[a-f0-9]{4}"}"#).unwrap();
        assert!(regex.matches(&headers(&[("x-u", "beef")])));
        assert!(
            !regex.matches(&headers(&[("x-u", "beef1")])),
            "the whole value must match"
        );
        assert!(!regex.matches(&headers(&[("x-u", "xbeef")])));

        let present = matcher(r#"{"name":"x-d","present":true}"#).unwrap();
        let absent = matcher(r#"{"name":"x-d","present":false}"#).unwrap();
        assert!(present.matches(&headers(&[("x-d", "")])));
        assert!(!absent.matches(&headers(&[("x-d", "")])));
        assert!(!present.matches(&headers(&[("x-e", "1")])));
        assert!(absent.matches(&headers(&[("x-e", "1")])));
    }

    #[test]
    fn bad_matches_rejected() {
        let err = |json| matcher(json).unwrap_err();
        assert_eq!(err(r#"{"name":"x"}"#).field, "headers[0]");
        assert!(
            err(r#"{"name":"x","exact":"a","prefix":"b"}"#)
                .reason
                .contains("exactly one")
        );
        assert_eq!(
            err(r#"{"name":"bad name","exact":"a"}"#).field,
            "headers[0].name"
        );
        assert_eq!(err(r#"{"name":"x","regex":"("}"#).field, "headers[0].regex");
    }

    #[test]
    fn empty_route_has_no_policy() {
        assert!(RoutePolicy::build(&Route::default()).unwrap().is_none());
        let route = Route {
            timeout_ms: Some(0),
            ..Route::default()
        };
        let policy = RoutePolicy::build(&route).unwrap().unwrap();
        assert_eq!(
            policy.request_timeout(Some(Duration::from_secs(1))),
            None,
            "0 turns the cluster's timeout off"
        );
    }

    #[test]
    fn edits_applied_in_order() {
        let route: Route = serde_json::from_str(
            r#"{"cluster":"c","host_rewrite":"internal.svc:8080",
                "request_headers_to_remove":["x-secret","x-env"],
                "request_headers_to_add":[{"name":"x-env","value":"prod"},
                                          {"name":"x-tag","value":"b","append":true}],
                "response_headers_to_remove":["server"],
                "response_headers_to_add":[{"name":"x-served-by","value":"berth"}]}"#,
        )
        .unwrap();
        let policy = RoutePolicy::build(&route).unwrap().unwrap();
        let mut request = headers(&[
            ("host", "public.test"),
            ("x-secret", "1"),
            ("x-env", "dev"),
            ("x-tag", "a"),
        ]);
        request_headers(&policy, &mut request);
        assert_eq!(request["host"], "internal.svc:8080");
        assert!(!request.contains_key("x-secret"));
        assert_eq!(request["x-env"], "prod");
        let tags: Vec<_> = request.get_all("x-tag").iter().collect();
        assert_eq!(tags, ["a", "b"]);

        assert!(policy.edits_response());
        let mut response = headers(&[("server", "nginx"), ("x-served-by", "other")]);
        response_headers(&policy, &mut response);
        assert!(!response.contains_key("server"));
        assert_eq!(response["x-served-by"], "berth");
    }

    #[test]
    fn bad_edits_rejected() {
        let err = |json: &str| {
            let route: Route = serde_json::from_str(json).unwrap();
            RoutePolicy::build(&route).unwrap_err()
        };
        let e = err(r#"{"cluster":"c","request_headers_to_add":[{"name":"Host","value":"x"}]}"#);
        assert_eq!(e.field, "request_headers_to_add[0].name");
        assert!(e.reason.contains("managed by the proxy"), "{e:?}");
        let e = err(r#"{"cluster":"c","response_headers_to_add":[{"name":"x","value":"a\nb"}]}"#);
        assert_eq!(e.field, "response_headers_to_add[0].value");
        let e = err(r#"{"cluster":"c","response_headers_to_remove":["ok","transfer-encoding"]}"#);
        assert_eq!(e.field, "response_headers_to_remove[1]");
        let e = err(r#"{"cluster":"c","host_rewrite":"user@host"}"#);
        assert_eq!(e.field, "host_rewrite");
        let e = err(r#"{"cluster":"c","host_rewrite":"a b"}"#);
        assert_eq!(e.field, "host_rewrite");
    }
}
