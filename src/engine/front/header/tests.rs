use super::*;
use proptest::prelude::*;

const MAX: usize = 4096;

fn parse_any(bytes: &[u8]) -> Parsed {
    parse(bytes, ProxyProtocol::Any, MAX)
}

fn source(text: &str) -> Option<SocketAddr> {
    Some(text.parse().unwrap())
}

/// A binary header: command (0 LOCAL, 1 PROXY), family byte, address
/// block (and TLVs).
fn v2(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
    let mut header = V2_SIGNATURE.to_vec();
    header.push(0x20 | command);
    header.push(family);
    header.extend_from_slice(&(block.len() as u16).to_be_bytes());
    header.extend_from_slice(block);
    header
}

fn v2_tcp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut block = [src, dst].concat();
    block.extend_from_slice(&sport.to_be_bytes());
    block.extend_from_slice(&dport.to_be_bytes());
    block
}

#[test]
fn the_specifications_text_examples_parse() {
    let line = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n";
    assert_eq!(
        parse_any(line),
        Parsed::Header {
            len: 47,
            source: source("192.168.0.1:56324")
        }
    );
    let line = b"PROXY TCP6 2001:db8::1 2001:db8:0:0:0:0:0:2 65535 0\r\n";
    assert_eq!(
        parse_any(line),
        Parsed::Header {
            len: line.len(),
            source: source("[2001:db8::1]:65535")
        }
    );
    let mapped = b"PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n";
    assert_eq!(
        parse_any(mapped),
        Parsed::Header {
            len: mapped.len(),
            source: source("[::ffff:192.0.2.1]:1")
        }
    );
    for unknown in [
        &b"PROXY UNKNOWN\r\n"[..],
        b"PROXY UNKNOWN ffff::1 ffff::2 65535 65535\r\n",
    ] {
        assert_eq!(
            parse_any(unknown),
            Parsed::Header {
                len: unknown.len(),
                source: None
            }
        );
    }
    let worst = format!(
        "PROXY UNKNOWN {0} {0} 65535 65535\r\n",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    );
    assert_eq!(worst.len(), V1_MAX);
    assert!(matches!(
        parse_any(worst.as_bytes()),
        Parsed::Header { len: V1_MAX, .. }
    ));
}

#[test]
fn binary_headers_parse() {
    let header = v2(
        1,
        0x11,
        &v2_tcp4([203, 0, 113, 7], [10, 0, 0, 1], 40000, 7000),
    );
    let mut stream = header.clone();
    stream.extend_from_slice(b"PING\r\n");
    assert_eq!(
        parse_any(&stream),
        Parsed::Header {
            len: 28,
            source: source("203.0.113.7:40000")
        }
    );
    let mut block = vec![0x20, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x05];
    block.extend_from_slice(&[0xfd; 16]);
    block.extend_from_slice(&[0x12, 0x34, 0x1b, 0x58]);
    // TLVs after the addresses are skipped: a NOOP and a unique ID.
    block.extend_from_slice(&[0x04, 0, 2, 9, 9, 0x05, 0, 3, 1, 2, 3]);
    let header = v2(1, 0x21, &block);
    assert_eq!(
        parse_any(&header),
        Parsed::Header {
            len: header.len(),
            source: source("[2001::5]:4660")
        }
    );
    // LOCAL (a balancer's health check): addresses ignored, even bad ones.
    for family in [0x00, 0x11, 0x21] {
        let header = v2(0, family, &[1, 2, 3]);
        assert_eq!(
            parse_any(&header),
            Parsed::Header {
                len: 19,
                source: None
            }
        );
    }
    // UNSPEC, UDP and UNIX fall back to the connection's own address.
    for (family, len) in [(0x00, 0), (0x12, 12), (0x22, 36), (0x31, 216), (0x10, 4)] {
        let header = v2(1, family, &vec![7; len]);
        let expected = Parsed::Header {
            len: 16 + len,
            source: None,
        };
        assert_eq!(parse_any(&header), expected, "family {family:#x}");
    }
}

#[test]
fn each_mode_takes_only_its_versions() {
    let text = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec();
    let binary = v2(1, 0x11, &v2_tcp4([1, 2, 3, 4], [5, 6, 7, 8], 1, 2));
    let header = |bytes: &[u8], mode| matches!(parse(bytes, mode, MAX), Parsed::Header { .. });
    assert!(header(&text, ProxyProtocol::V1) && header(&binary, ProxyProtocol::V2));
    assert!(header(&text, ProxyProtocol::Any) && header(&binary, ProxyProtocol::Any));
    assert_eq!(parse(&text, ProxyProtocol::V2, MAX), Parsed::Missing);
    assert_eq!(parse(&binary, ProxyProtocol::V1, MAX), Parsed::Missing);
}

#[test]
fn what_is_no_header_is_missing_from_its_first_wrong_byte() {
    for bytes in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"*1\r\n$4\r\nPING\r\n",
        b"PROXZ",
        b"PROX\r",
        b"PROXYTCP4",
        b"\r\n\r\n\0\r\nQUIX",
        b"\r\r",
        b"\0",
    ] {
        assert_eq!(parse_any(bytes), Parsed::Missing, "{bytes:?}");
    }
    for prefix in [&b""[..], b"P", b"PROXY", b"PROXY TCP4 1.2", b"\r\n\r\n\0\r"] {
        assert_eq!(parse_any(prefix), Parsed::Incomplete, "{prefix:?}");
    }
}

#[test]
fn malformed_headers_are_refused() {
    let text_cases = [
        "PROXY TCP4 192.168.00.1 192.168.0.11 56324 443\r\n",
        "PROXY TCP4 192.168.0.1 192.168.0.11 056324 443\r\n",
        "PROXY TCP4 192.168.0.1  192.168.0.11 56324 443\r\n",
        "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443 \r\n",
        "PROXY TCP4 192.168.0.1 192.168.0.11 56324\r\n",
        "PROXY TCP4 192.168.0.256 192.168.0.11 56324 443\r\n",
        "PROXY TCP4 192.168.0 192.168.0.11 56324 443\r\n",
        "PROXY TCP4 192.168.0.1 192.168.0.11 65536 443\r\n",
        "PROXY TCP4 ::1 ::2 1 2\r\n",
        "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY UNKNOWNX\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        "PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
    ];
    for case in text_cases {
        assert!(
            matches!(parse_any(case.as_bytes()), Parsed::Malformed(_)),
            "{case:?}: {:?}",
            parse_any(case.as_bytes())
        );
    }
    let endless = format!("PROXY UNKNOWN {}", "x".repeat(200));
    assert!(matches!(
        parse_any(endless.as_bytes()),
        Parsed::Malformed(_)
    ));
    let mut not_ascii = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec();
    not_ascii[12] = 0xff;
    assert!(matches!(parse_any(&not_ascii), Parsed::Malformed(_)));

    let good = v2(1, 0x11, &v2_tcp4([1, 2, 3, 4], [5, 6, 7, 8], 1, 2));
    let mut version_1 = good.clone();
    version_1[12] = 0x11;
    let mut command_2 = good.clone();
    command_2[12] = 0x22;
    let mut family_4 = good.clone();
    family_4[13] = 0x41;
    let mut protocol_3 = good.clone();
    protocol_3[13] = 0x13;
    let short_v4 = v2(1, 0x11, &[1, 2, 3, 4, 5, 6, 7, 8]);
    let short_v6 = v2(1, 0x21, &[0; 35]);
    let short_unix = v2(1, 0x31, &[0; 215]);
    for case in [
        version_1, command_2, family_4, protocol_3, short_v4, short_v6, short_unix,
    ] {
        assert!(matches!(parse_any(&case), Parsed::Malformed(_)), "{case:?}");
    }
    // Decided from the first 13 or 14 bytes, not after the whole header.
    assert!(matches!(
        parse_any(&[&V2_SIGNATURE[..], &[0x10]].concat()),
        Parsed::Malformed(_)
    ));
    // Longer than the ring it must be read into.
    let long = v2(1, 0x11, &[0; 500]);
    assert_eq!(
        parse(&long, ProxyProtocol::V2, 516),
        Parsed::Header {
            len: 516,
            source: source("0.0.0.0:0")
        }
    );
    assert!(matches!(
        parse(&long, ProxyProtocol::V2, 515),
        Parsed::Malformed(_)
    ));
    assert!(matches!(
        parse(&long[..16], ProxyProtocol::V2, 515),
        Parsed::Malformed(_)
    ));
}

fn arb_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        any::<[u8; 16]>().prop_map(|o| IpAddr::V6(Ipv6Addr::from(o))),
    ]
}

/// A header of `version` (1 or 2) for `src` → `dst`, with `tlvs` bytes of
/// padding TLV in a binary one.
fn encode(version: u8, src: SocketAddr, dst: SocketAddr, tlv: usize) -> Vec<u8> {
    if version == 1 {
        let family = if src.is_ipv4() { "TCP4" } else { "TCP6" };
        let text = format!(
            "PROXY {family} {} {} {} {}\r\n",
            src.ip(),
            dst.ip(),
            src.port(),
            dst.port()
        );
        return text.into_bytes();
    }
    let (family, mut block) = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (0x11, [s.octets(), d.octets()].concat()),
        (IpAddr::V6(s), IpAddr::V6(d)) => (0x21, [s.octets(), d.octets()].concat()),
        _ => unreachable!("one family"),
    };
    block.extend_from_slice(&src.port().to_be_bytes());
    block.extend_from_slice(&dst.port().to_be_bytes());
    if tlv >= 3 {
        block.extend_from_slice(&[0x04, 0, (tlv - 3) as u8]);
        block.resize(block.len() + tlv - 3, 0xaa);
    }
    v2(1, family, &block)
}

fn arb_header() -> impl Strategy<Value = (Vec<u8>, SocketAddr)> {
    (
        arb_ip(),
        any::<u16>(),
        any::<u16>(),
        any::<[u8; 16]>(),
        1u8..=2,
        0usize..200,
    )
        .prop_map(|(ip, sport, dport, other, version, tlv)| {
            let dst = match ip {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(other[0], other[1], other[2], other[3])),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(other)),
            };
            let src = SocketAddr::new(ip, sport);
            (encode(version, src, SocketAddr::new(dst, dport), tlv), src)
        })
}

proptest! {
    /// Every header a sender can make parses to its source, with the
    /// client's bytes after it left alone, and every strict prefix of it
    /// asks for more (a header may arrive in pieces).
    #[test]
    fn every_header_round_trips((header, src) in arb_header(), after in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut stream = header.clone();
        stream.extend_from_slice(&after);
        prop_assert_eq!(parse_any(&stream), Parsed::Header { len: header.len(), source: Some(src) });
        for cut in 0..header.len() {
            prop_assert_eq!(parse_any(&header[..cut]), Parsed::Incomplete, "cut at {}", cut);
        }
    }

    /// Any bytes: no panic, and a header never claims more than it has.
    #[test]
    fn any_bytes_are_judged_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), max in 16usize..600) {
        for mode in [ProxyProtocol::V1, ProxyProtocol::V2, ProxyProtocol::Any] {
            if let Parsed::Header { len, .. } = parse(&bytes, mode, max) {
                prop_assert!(len <= bytes.len() && len >= 15);
            }
        }
    }

    /// A header with one byte changed: judged without panic, and a verdict
    /// on a prefix never flips once more bytes come (an error stays an
    /// error, a header stays the same header).
    #[test]
    fn damaged_headers_are_judged_consistently((header, _) in arb_header(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut damaged = header;
        let at = at.index(damaged.len());
        damaged[at] = byte;
        let full = parse_any(&damaged);
        for cut in 0..damaged.len() {
            match parse_any(&damaged[..cut]) {
                Parsed::Incomplete => {}
                Parsed::Header { len, source } => {
                    prop_assert_eq!(full, Parsed::Header { len, source });
                }
                early => prop_assert_eq!(std::mem::discriminant(&early), std::mem::discriminant(&full)),
            }
        }
    }
}
