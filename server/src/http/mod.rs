//! HTTP/1.1 request parsing (httparse) and response writing, independent of the socket layer.
