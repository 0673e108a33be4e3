//! Channel recycling in memory (MS-RPCH 3.2.x.5): IN_R1, IN_R2, OUT_R1 and OUT_R2, alone and
//! at the same time, with lifetimes at the spec minimum (128 KiB) so that a few megabytes force
//! dozens of recyclings; every PDU must arrive once, in order, intact.

#![allow(clippy::panic, clippy::unwrap_used, clippy::indexing_slicing)]

mod harness;

use harness::{Net, Settings, rpc_pdu};

const LIFETIME: u32 = 128 * 1024;

fn transfer(net: &mut Net, total: usize) -> Vec<bytes::Bytes> {
    let mut expected = Vec::new();
    let mut sent = 0usize;
    let mut seq = 0u32;
    while sent < total {
        let len = 24 + (seq as usize * 7919) % 5_000;
        let pdu = rpc_pdu(seq, len);
        sent += len;
        expected.push(pdu.clone());
        net.client.send(pdu);
        seq += 1;
        if seq.is_multiple_of(8) {
            net.settle().unwrap();
        }
    }
    net.settle().unwrap();
    expected
}

fn check(net: &Net, expected: &[bytes::Bytes]) {
    assert_eq!(
        net.backend_seen,
        expected.len(),
        "PDUs that reached the backend"
    );
    assert_eq!(net.delivered.len(), expected.len(), "PDUs that came back");
    assert!(
        net.delivered == expected,
        "every PDU once, in order, intact"
    );
}

#[test]
fn out_r2_on_one_proxy() {
    let mut net = Net::new(Settings {
        out_lifetime: LIFETIME,
        ..Settings::default()
    });
    let expected = transfer(&mut net, 4 * 1024 * 1024);
    check(&net, &expected);
    let (in_recycles, out_recycles) = net.client.recycles();
    assert_eq!(in_recycles, 0);
    assert!(out_recycles >= 30, "OUT recycled {out_recycles} times");
    assert_eq!(net.server.as_ref().unwrap().recycles().1, out_recycles);
    assert_eq!(net.op(0).unwrap().recycles(), out_recycles, "all R2");
}

#[test]
fn in_r2_on_one_proxy() {
    let mut net = Net::new(Settings {
        in_lifetime: LIFETIME,
        ..Settings::default()
    });
    let expected = transfer(&mut net, 4 * 1024 * 1024);
    check(&net, &expected);
    let (in_recycles, out_recycles) = net.client.recycles();
    assert!(in_recycles >= 30, "IN recycled {in_recycles} times");
    assert_eq!(out_recycles, 0);
    assert_eq!(net.ip(0).unwrap().recycles(), in_recycles, "all R2");
}

#[test]
fn r1_when_every_new_request_lands_on_the_other_proxy() {
    let mut net = Net::new(Settings {
        in_lifetime: LIFETIME,
        out_lifetime: LIFETIME,
        nodes: 2,
        ..Settings::default()
    });
    net.place_initial(0, 1);
    // Each successor request goes to the node its predecessor was not on.
    let mut last = [0usize, 1usize];
    net.route = Box::new(move |is_in, _| {
        let slot = usize::from(!is_in);
        last[slot] = 1 - last[slot];
        last[slot]
    });
    let expected = transfer(&mut net, 4 * 1024 * 1024);
    check(&net, &expected);
    let (in_recycles, out_recycles) = net.client.recycles();
    assert!(
        in_recycles >= 30 && out_recycles >= 30,
        "{in_recycles} / {out_recycles}"
    );
    // No proxy ever saw its own successor: every recycling was R1.
    assert!(net.server_recycles.iter().all(|(_, r1)| *r1));
    assert_eq!(
        net.server.as_ref().unwrap().recycles(),
        (in_recycles, out_recycles)
    );
}

#[test]
fn r1_and_r2_mixed_with_both_directions_recycling_at_once() {
    let mut net = Net::new(Settings {
        in_lifetime: LIFETIME,
        out_lifetime: LIFETIME,
        nodes: 3,
        client_window: 16_384,
        proxy_window: 8_192,
        server_window: 12_288,
        ..Settings::default()
    });
    // A deterministic pseudo-random spread over three proxies: R1 and R2 both happen.
    let mut x: u32 = 0x9E37_79B9;
    net.route = Box::new(move |_, _| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        (x % 3) as usize
    });
    let expected = transfer(&mut net, 8 * 1024 * 1024);
    check(&net, &expected);
    let (in_recycles, out_recycles) = net.client.recycles();
    assert!(
        in_recycles >= 50 && out_recycles >= 50,
        "{in_recycles} / {out_recycles}"
    );
    let count = |is_in: bool, r1: bool| {
        net.server_recycles
            .iter()
            .filter(|(i, r)| *i == is_in && *r == r1)
            .count() as u64
    };
    let (r2_in, r2_out) = (count(true, false), count(false, false));
    assert_eq!(r2_in + count(true, true), in_recycles);
    assert_eq!(r2_out + count(false, true), out_recycles);
    assert!(
        r2_in > 0 && r2_in < in_recycles,
        "IN: {r2_in} R2 of {in_recycles}"
    );
    assert!(
        r2_out > 0 && r2_out < out_recycles,
        "OUT: {r2_out} R2 of {out_recycles}"
    );
}

#[test]
fn an_idle_channel_recycles_on_ping_traffic_alone() {
    let mut net = Net::new(Settings {
        out_lifetime: LIFETIME,
        connection_timeout_ms: 2_000,
        ..Settings::default()
    });
    net.settle().unwrap();
    // Pings every second; 20 bytes each; a quarter of 128 KiB of margin is reached after
    // ~4900 pings. Advance 3 hours of virtual time.
    for _ in 0..(3 * 3600) {
        net.advance(std::time::Duration::from_secs(1)).unwrap();
    }
    assert!(
        net.client.recycles().1 >= 1,
        "ping bytes alone recycled the OUT channel"
    );
    net.client.send(rpc_pdu(9, 1000));
    net.settle().unwrap();
    assert_eq!(net.delivered.len(), 1);
}
