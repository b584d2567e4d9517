//! HTTP/1.1 request parsing (httparse) and response writing, independent of the socket layer.
//!
//! Parsing borrows from the receive buffer and never allocates; responses are appended to the
//! connection's output buffer so that every response produced by one receive goes out in one
//! send. Every hostile input maps to a specific 4xx (`HttpError`), never a panic.

/// Headers we look at; more than this many is a 431.
pub const MAX_HEADERS: usize = 48;

/// Request methods the gateway serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// HEAD (answered like GET without a body).
    Head,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// DELETE.
    Delete,
    /// Anything else (answered 405).
    Other,
}

/// A parsed request, borrowing the receive buffer.
#[derive(Debug)]
pub struct Request<'a> {
    /// Method.
    pub method: Method,
    /// Path without the query string.
    pub path: &'a str,
    /// Query string without the `?` (empty if none).
    pub query: &'a str,
    /// `Authorization` header value.
    pub authorization: Option<&'a [u8]>,
    /// `Content-Type` header value.
    pub content_type: Option<&'a [u8]>,
    /// `X-Forwarded-For` (first hop) when sent by a trusted proxy; the shard decides trust.
    pub forwarded_for: Option<&'a [u8]>,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
    /// Minor HTTP version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// A header problem that leaves the message framing intact (no `Host` in HTTP/1.1, a
    /// repeated `Host`, `Authorization` or `Content-Type`): the request is well delimited, so
    /// the handler answers it `400` with this error instead of serving it, and the next
    /// request on the connection is read where this one ends.
    pub header_error: Option<HttpError>,
    /// The body (Content-Length bytes).
    pub body: &'a [u8],
}

impl Request<'_> {
    /// The bearer token from `Authorization: Bearer ...`, if that is the scheme.
    pub fn bearer(&self) -> Option<&[u8]> {
        let value = self.authorization?;
        let scheme = value.get(..7)?;
        if scheme.eq_ignore_ascii_case(b"bearer ") {
            let token = value[7..].trim_ascii();
            (!token.is_empty()).then_some(token)
        } else {
            None
        }
    }

    /// Whether the response must say `connection: keep-alive`: an HTTP/1.0 client closes after
    /// the response unless told otherwise, even when it asked to keep the connection.
    pub fn echoes_keep_alive(&self) -> bool {
        self.minor_version == 0 && self.keep_alive
    }

    /// Value of query parameter `name` (first occurrence; not percent-decoded).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then_some(value)
        })
    }
}

/// Why a request could not be parsed; each maps to one status and message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The request line or a header is not valid HTTP/1.x.
    #[error("malformed HTTP request")]
    Malformed,
    /// Request line plus headers exceed the limit.
    #[error("request headers are too large")]
    HeadersTooLarge,
    /// More header lines than `MAX_HEADERS`.
    #[error("too many request headers")]
    TooManyHeaders,
    /// Content-Length above the body limit.
    #[error("request body is too large")]
    BodyTooLarge,
    /// Content-Length missing where a body is sent, or Transfer-Encoding used.
    #[error("request body needs a Content-Length (chunked bodies are not accepted)")]
    LengthRequired,
    /// Content-Length is not a number.
    #[error("invalid Content-Length header")]
    BadContentLength,
    /// A header that must appear at most once appears again (`Content-Length` here closes the
    /// connection; `Host`, `Authorization`, `Content-Type` are a `header_error`).
    #[error("the {0} header appears more than once")]
    Repeated(&'static str),
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2).
    #[error("HTTP/1.1 request has no Host header")]
    MissingHost,
    /// `Host` holds characters no `host[:port]` can contain.
    #[error("Host header is not a valid host[:port]")]
    BadHost,
    /// HTTP version other than 1.0/1.1.
    #[error("HTTP version not supported")]
    Version,
    /// Path is not valid UTF-8.
    #[error("request path is not valid UTF-8")]
    BadPath,
}

impl HttpError {
    /// The status this error is answered with.
    pub fn status(self) -> Status {
        match self {
            HttpError::Malformed
            | HttpError::BadContentLength
            | HttpError::Repeated(_)
            | HttpError::MissingHost
            | HttpError::BadHost
            | HttpError::BadPath => Status::BadRequest,
            HttpError::HeadersTooLarge | HttpError::TooManyHeaders => {
                Status::RequestHeaderFieldsTooLarge
            }
            HttpError::BodyTooLarge => Status::PayloadTooLarge,
            HttpError::LengthRequired => Status::LengthRequired,
            HttpError::Version => Status::HttpVersionNotSupported,
        }
    }
}

/// Outcome of parsing the front of a buffer.
#[derive(Debug)]
pub enum Parsed<'a> {
    /// A whole request and the bytes it used.
    Complete(Request<'a>, usize),
    /// More bytes are needed.
    Partial,
    /// The head is complete, it asks `Expect: 100-continue`, and no body byte has arrived:
    /// the client waits for `100 Continue` before sending the body (RFC 9110 §10.1.1).
    BodyExpected,
}

/// Parses one request from the front of `buf`.
pub fn parse(
    buf: &[u8],
    max_header_bytes: usize,
    max_body_bytes: usize,
) -> Result<Parsed<'_>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > max_header_bytes {
                Err(HttpError::HeadersTooLarge)
            } else {
                Ok(Parsed::Partial)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(httparse::Error::Version) => return Err(HttpError::Version),
        Err(_) => return Err(HttpError::Malformed),
    };
    if head_len > max_header_bytes {
        return Err(HttpError::HeadersTooLarge);
    }
    let minor = req.version.unwrap_or(1);
    let method = match req.method.unwrap_or("") {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "HEAD" => Method::Head,
        _ => Method::Other,
    };
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));

    let fields = read_fields(req.headers, minor)?;
    let body_len = fields.content_length.unwrap_or(0);
    if body_len > max_body_bytes {
        return Err(HttpError::BodyTooLarge);
    }
    let total = head_len + body_len;
    if buf.len() < total {
        return Ok(if fields.expects_continue && buf.len() == head_len {
            Parsed::BodyExpected
        } else {
            Parsed::Partial
        });
    }
    Ok(Parsed::Complete(
        Request {
            method,
            path,
            query,
            authorization: fields.authorization,
            content_type: fields.content_type,
            forwarded_for: fields.forwarded_for,
            keep_alive: fields.keep_alive,
            minor_version: minor,
            header_error: fields.header_error,
            body: &buf[head_len..total],
        },
        total,
    ))
}

/// The header fields a request's handling depends on.
struct Fields<'a> {
    authorization: Option<&'a [u8]>,
    content_type: Option<&'a [u8]>,
    forwarded_for: Option<&'a [u8]>,
    content_length: Option<usize>,
    keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request.
    expects_continue: bool,
    header_error: Option<HttpError>,
}

/// Reads the fields we act on. Framing problems (`Content-Length`, `Transfer-Encoding`) are
/// errors that end the connection; the rest become `header_error`.
fn read_fields<'a>(headers: &[httparse::Header<'a>], minor: u8) -> Result<Fields<'a>, HttpError> {
    let mut f = Fields {
        authorization: None,
        content_type: None,
        forwarded_for: None,
        content_length: None,
        keep_alive: minor == 1,
        expects_continue: false,
        header_error: None,
    };
    let mut host = None;
    for h in headers {
        let name = h.name.as_bytes();
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => {
                once(&mut host, h.value, "Host", &mut f.header_error);
            }
            13 if name.eq_ignore_ascii_case(b"authorization") => {
                once(
                    &mut f.authorization,
                    h.value,
                    "Authorization",
                    &mut f.header_error,
                );
            }
            12 if name.eq_ignore_ascii_case(b"content-type") => {
                once(
                    &mut f.content_type,
                    h.value,
                    "Content-Type",
                    &mut f.header_error,
                );
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                // Framing: one value, one way to delimit the body (a proxy in front may have
                // picked another of several), so any repeat ends the connection.
                if f.content_length.is_some() {
                    return Err(HttpError::Repeated("Content-Length"));
                }
                f.content_length = Some(parse_usize(h.value).ok_or(HttpError::BadContentLength)?);
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                return Err(HttpError::LengthRequired);
            }
            10 if name.eq_ignore_ascii_case(b"connection") => {
                let v = h.value;
                if contains_token(v, b"close") {
                    f.keep_alive = false;
                } else if contains_token(v, b"keep-alive") {
                    f.keep_alive = true;
                }
            }
            6 if name.eq_ignore_ascii_case(b"expect") => {
                f.expects_continue = minor == 1 && contains_token(h.value, b"100-continue");
            }
            15 if name.eq_ignore_ascii_case(b"x-forwarded-for") => {
                let first = h.value.split(|&b| b == b',').next().unwrap_or(b"");
                f.forwarded_for = Some(first.trim_ascii());
            }
            _ => {}
        }
    }
    if f.header_error.is_none() {
        f.header_error = match host {
            None if minor == 1 => Some(HttpError::MissingHost),
            Some(value) if !valid_host(value) => Some(HttpError::BadHost),
            _ => None,
        };
    }
    Ok(f)
}

/// Keeps the first value of a header that must appear once; a repeat becomes the request's
/// `header_error` (the first problem found is the one reported).
fn once<'a>(
    slot: &mut Option<&'a [u8]>,
    value: &'a [u8],
    name: &'static str,
    header_error: &mut Option<HttpError>,
) {
    if slot.is_some() {
        header_error.get_or_insert(HttpError::Repeated(name));
    } else {
        *slot = Some(value);
    }
}

/// Whether `value` can be a `uri-host [ ":" port ]` (RFC 9110 §7.2): reg-name, IPv4 or
/// IP-literal characters only. Empty is allowed (a target without an authority).
fn valid_host(value: &[u8]) -> bool {
    value
        .trim_ascii()
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%:[]".contains(&b))
}

fn parse_usize(text: &[u8]) -> Option<usize> {
    let text = text.trim_ascii();
    if text.is_empty() || text.len() > 12 {
        return None;
    }
    text.iter().try_fold(0usize, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + usize::from(b - b'0'))
    })
}

fn contains_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|part| part.trim_ascii().eq_ignore_ascii_case(token))
}

/// Response statuses we send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 200.
    Ok,
    /// 201.
    Created,
    /// 204.
    NoContent,
    /// 400.
    BadRequest,
    /// 401.
    Unauthorized,
    /// 403.
    Forbidden,
    /// 404.
    NotFound,
    /// 405.
    MethodNotAllowed,
    /// 408.
    RequestTimeout,
    /// 409.
    Conflict,
    /// 411.
    LengthRequired,
    /// 413.
    PayloadTooLarge,
    /// 415.
    UnsupportedMediaType,
    /// 429.
    TooManyRequests,
    /// 431.
    RequestHeaderFieldsTooLarge,
    /// 500.
    InternalServerError,
    /// 503.
    ServiceUnavailable,
    /// 505.
    HttpVersionNotSupported,
}

impl Status {
    /// The status line after `HTTP/1.1 `.
    pub fn line(self) -> &'static str {
        match self {
            Status::Ok => "200 OK",
            Status::Created => "201 Created",
            Status::NoContent => "204 No Content",
            Status::BadRequest => "400 Bad Request",
            Status::Unauthorized => "401 Unauthorized",
            Status::Forbidden => "403 Forbidden",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::RequestTimeout => "408 Request Timeout",
            Status::Conflict => "409 Conflict",
            Status::LengthRequired => "411 Length Required",
            Status::PayloadTooLarge => "413 Payload Too Large",
            Status::UnsupportedMediaType => "415 Unsupported Media Type",
            Status::TooManyRequests => "429 Too Many Requests",
            Status::RequestHeaderFieldsTooLarge => "431 Request Header Fields Too Large",
            Status::InternalServerError => "500 Internal Server Error",
            Status::ServiceUnavailable => "503 Service Unavailable",
            Status::HttpVersionNotSupported => "505 HTTP Version Not Supported",
        }
    }

    /// Numeric code.
    pub fn code(self) -> u16 {
        self.line()[..3].parse().unwrap_or(500)
    }
}

/// Appends one whole response to `out`.
///
/// `headers` are extra header lines, each without the trailing CRLF.
pub fn write_response(
    out: &mut Vec<u8>,
    status: Status,
    content_type: Option<&str>,
    headers: &[&[u8]],
    body: &[u8],
    keep_alive: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.line().as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(ct) = content_type {
        out.extend_from_slice(b"content-type: ");
        out.extend_from_slice(ct.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for h in headers {
        out.extend_from_slice(h);
        out.extend_from_slice(b"\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"content-length: ");
    push_decimal(out, body.len());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

/// Adds `connection: keep-alive` to the response starting at `start` in `out`, right after
/// its status line. For HTTP/1.0 clients that asked to keep the connection
/// ([`Request::echoes_keep_alive`]); those are rare, so the hot path's responses never pay for
/// it and the few that need it pay one move of their bytes.
pub fn echo_keep_alive(out: &mut Vec<u8>, start: usize) {
    const HEADER: &[u8] = b"connection: keep-alive\r\n";
    let Some(line_len) = out
        .get(start..)
        .and_then(|resp| resp.windows(2).position(|w| w == b"\r\n"))
    else {
        return;
    };
    let at = start + line_len + 2;
    out.splice(at..at, HEADER.iter().copied());
}

/// Appends `n` in decimal without allocating.
pub fn push_decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends a JSON response.
pub fn write_json(out: &mut Vec<u8>, status: Status, body: &[u8], keep_alive: bool) {
    write_response(out, status, Some("application/json"), &[], body, keep_alive);
}

/// Appends an OAuth-shaped error: `{"error":..,"error_description":..}`.
pub fn write_oauth_error(
    out: &mut Vec<u8>,
    status: Status,
    error: &str,
    description: &str,
    extra_headers: &[&[u8]],
    keep_alive: bool,
) {
    let body = serde_json::json!({ "error": error, "error_description": description });
    let body = body.to_string();
    write_response(
        out,
        status,
        Some("application/json"),
        extra_headers,
        body.as_bytes(),
        keep_alive,
    );
}

/// Answers a parse failure; the connection is closed after it.
pub fn write_http_error(out: &mut Vec<u8>, err: HttpError) {
    write_oauth_error(
        out,
        err.status(),
        "invalid_request",
        &err.to_string(),
        &[],
        false,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> (Request<'_>, usize) {
        match parse(buf, 8192, 1024).unwrap() {
            Parsed::Complete(r, n) => (r, n),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_bearer_and_keep_alive() {
        let buf = b"GET /v1/authenticate?x=1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer abc.def.ghi\r\n\r\n";
        let (r, n) = complete(buf);
        assert_eq!(n, buf.len());
        assert_eq!(r.path, "/v1/authenticate");
        assert_eq!(r.query_param("x"), Some("1"));
        assert_eq!(r.bearer(), Some(&b"abc.def.ghi"[..]));
        assert!(r.keep_alive);
    }

    #[test]
    fn pipelined_requests_parse_one_at_a_time() {
        let buf = b"GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET /c";
        let (a, n1) = complete(buf);
        assert_eq!(a.path, "/a");
        let (b, n2) = complete(&buf[n1..]);
        assert_eq!((b.path, b.body), ("/b", &b"hi"[..]));
        assert!(matches!(
            parse(&buf[n1 + n2..], 8192, 1024).unwrap(),
            Parsed::Partial
        ));
    }

    #[test]
    fn hostile_inputs_get_specific_errors() {
        assert_eq!(
            parse(
                b"GET / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n",
                8192,
                1024
            )
            .unwrap_err(),
            HttpError::BodyTooLarge
        );
        assert_eq!(
            parse(
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                8192,
                1024
            )
            .unwrap_err(),
            HttpError::LengthRequired
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", 8192, 1024).unwrap_err(),
            HttpError::BadContentLength
        );
        assert_eq!(
            parse(
                b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                8192,
                1024
            )
            .unwrap_err(),
            HttpError::Repeated("Content-Length")
        );
        let big = [b'a'; 300];
        let mut long = b"GET /".to_vec();
        long.extend_from_slice(&big);
        assert_eq!(
            parse(&long, 256, 1024).unwrap_err(),
            HttpError::HeadersTooLarge
        );
        assert_eq!(
            parse(b"\x00\x01garbage\r\n\r\n", 8192, 1024).unwrap_err(),
            HttpError::Malformed
        );
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("h{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(
            parse(&many, 8192, 1024).unwrap_err(),
            HttpError::TooManyHeaders
        );
    }

    #[test]
    fn http10_closes_unless_asked() {
        let (r, _) = complete(b"GET / HTTP/1.0\r\n\r\n");
        assert!(!r.keep_alive);
        assert!(!r.echoes_keep_alive());
        let (r, _) = complete(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(r.keep_alive);
        assert!(r.echoes_keep_alive(), "1.0 needs the header to stay open");
        let (r, _) = complete(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        assert!(!r.keep_alive);
        let (r, _) = complete(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n");
        assert!(r.keep_alive);
        assert!(
            !r.echoes_keep_alive(),
            "1.1 keeps the connection by default"
        );
    }

    #[test]
    fn http11_needs_exactly_one_valid_host() {
        let header_error = |buf: &[u8]| complete(buf).0.header_error;
        assert_eq!(
            header_error(b"GET / HTTP/1.1\r\n\r\n"),
            Some(HttpError::MissingHost)
        );
        assert_eq!(
            header_error(b"GET / HTTP/1.0\r\n\r\n"),
            None,
            "1.0 may omit it"
        );
        assert_eq!(
            header_error(b"GET / HTTP/1.1\r\nHost: a.example:8080\r\n\r\n"),
            None
        );
        assert_eq!(
            header_error(b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"),
            None
        );
        assert_eq!(
            header_error(b"GET / HTTP/1.1\r\nHost:\r\n\r\n"),
            None,
            "empty is valid"
        );
        assert_eq!(
            header_error(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"),
            Some(HttpError::Repeated("Host"))
        );
        assert_eq!(
            header_error(b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n"),
            Some(HttpError::Repeated("Host")),
            "a repeat is refused in 1.0 too"
        );
        for bad in [&b"a b"[..], b"a/b", b"user@a", b"a?b", b"a\"b"] {
            let mut buf = b"GET / HTTP/1.1\r\nHost: ".to_vec();
            buf.extend_from_slice(bad);
            buf.extend_from_slice(b"\r\n\r\n");
            assert_eq!(header_error(&buf), Some(HttpError::BadHost), "{bad:?}");
        }
    }

    #[test]
    fn repeated_singleton_headers_are_refused() {
        let buf = b"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer one\r\nauthorization: Bearer two\r\n\r\n";
        let (r, n) = complete(buf);
        assert_eq!(
            n,
            buf.len(),
            "framing is intact: the next request starts after it"
        );
        assert_eq!(r.header_error, Some(HttpError::Repeated("Authorization")));
        assert_eq!(r.bearer(), Some(&b"one"[..]));
        let buf = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            complete(buf).0.header_error,
            Some(HttpError::Repeated("Content-Type"))
        );
        // The first problem is the one reported.
        let buf = b"GET / HTTP/1.1\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n";
        assert_eq!(
            complete(buf).0.header_error,
            Some(HttpError::Repeated("Authorization"))
        );
        // Content-Length delimits the body: even an identical repeat ends the connection.
        assert_eq!(
            parse(
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi",
                8192,
                1024
            )
            .unwrap_err(),
            HttpError::Repeated("Content-Length")
        );
        let (r, _) = complete(b"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer x\r\n\r\n");
        assert_eq!(r.header_error, None);
    }

    #[test]
    fn keep_alive_echo_goes_after_the_status_line() {
        let mut out = b"earlier".to_vec();
        write_response(&mut out, Status::Ok, Some("text/plain"), &[], b"ok", true);
        echo_keep_alive(&mut out, 7);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "earlierHTTP/1.1 200 OK\r\nconnection: keep-alive\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"
        );
    }

    #[test]
    fn response_has_length_and_close() {
        let mut out = Vec::new();
        write_response(
            &mut out,
            Status::Ok,
            Some("text/plain"),
            &[b"x-a: 1"],
            b"ok",
            false,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("x-a: 1\r\n"));
        assert!(text.contains("connection: close\r\n"));
        assert!(text.ends_with("content-length: 2\r\n\r\nok"));
    }

    #[test]
    fn expect_100_continue_is_reported_until_the_body_starts() {
        let head = b"POST /v1/token HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n";
        assert!(matches!(parse(head, 8192, 1024), Ok(Parsed::BodyExpected)));
        let mut started = head.to_vec();
        started.extend_from_slice(b"ab");
        assert!(matches!(parse(&started, 8192, 1024), Ok(Parsed::Partial)));
        started.extend_from_slice(b"cd");
        assert!(matches!(
            parse(&started, 8192, 1024),
            Ok(Parsed::Complete(_, _))
        ));
        // Too large: refused before the body is sent (the point of asking).
        assert_eq!(parse(head, 8192, 3).unwrap_err(), HttpError::BodyTooLarge);
        let no_expect = b"POST /v1/token HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n";
        assert!(matches!(parse(no_expect, 8192, 1024), Ok(Parsed::Partial)));
    }
}
