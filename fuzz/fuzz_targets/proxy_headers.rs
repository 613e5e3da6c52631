//! Forwarding headers and the proxy stage on arbitrary header values: no input may panic them,
//! and a header never names more hops than the bound.
#![no_main]

use apisessions::{
    exchange::{Exchange, MessageMeta, Request},
    proxy::{
        ProxyConfig, ProxyStage,
        forwarded::{self, MAX_ENTRIES, Nodes},
    },
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let value = String::from_utf8_lossy(data);
    for rfc7239 in [true, false] {
        let mut nodes = Nodes::default();
        if rfc7239 {
            forwarded::parse_forwarded(&value, &mut nodes);
        } else {
            forwarded::parse_list(&value, &mut nodes);
        }
        assert!(nodes.list.len() <= MAX_ENTRIES);
        let _ = forwarded::resolve(&nodes, |ip| ip.is_loopback());
    }
    let mut stage = ProxyStage::new(ProxyConfig::default());
    let mut ready = Vec::new();
    for name in ["X-Forwarded-For", "Forwarded", "X-Real-IP"] {
        let exchange = Exchange {
            client: "127.0.0.1:40000".parse().unwrap(),
            server: "127.0.0.1:5000".parse().unwrap(),
            request: Some(Request {
                method: "GET".into(),
                uri: "/".into(),
                meta: MessageMeta {
                    headers: vec![(name.to_owned(), value.clone().into_owned())],
                    ..MessageMeta::default()
                },
            }),
            response: None,
            forwarding: Default::default(),
            tls: false,
            upstream: None,
            stream_id: None,
        };
        stage.push(exchange, &mut ready);
    }
    stage.finish(&mut ready);
    assert_eq!(ready.len(), 3);
});
