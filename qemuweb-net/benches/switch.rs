//! Throughput of the switch (not a test): frames forwarded per second, as a ratio to a
//! reference measured in the same run (the same frames copied through a bare `VecDeque`,
//! the least any in-memory forwarding costs).
//!
//! Run with `cargo bench -p qemuweb-net --bench switch`. `SWITCH_BENCH_FRAMES` sets the
//! frames per case (default 200000) and `SWITCH_BENCH_REPS` the repetitions (default 3; the
//! best is reported).

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

use qemuweb_config::{network_by_id, PortLimits};
use qemuweb_net::{Nic, PortId, Switch};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn frame(src: [u8; 6], dst: [u8; 6], len: usize) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend(src);
    f.extend([0x08, 0x00]);
    f.resize(len, 0x5a);
    f
}

/// A switch with `ports` NICs on the default network, without rate limits.
fn switch(ports: u8) -> (Switch, Vec<PortId>) {
    let mut s = Switch::new();
    let mut plan = network_by_id("default").unwrap().plan().unwrap();
    plan.limits = PortLimits {
        frames_per_second: u32::MAX,
        bytes_per_second: u32::MAX,
        burst_frames: u32::MAX,
        ..PortLimits::default()
    };
    s.add_network(plan).unwrap();
    let ids = (0..ports)
        .map(|i| {
            s.attach("default", Nic::new(format!("vm{i}"), mac(i)))
                .unwrap()
        })
        .collect();
    (s, ids)
}

fn mac(i: u8) -> [u8; 6] {
    [0x52, 0x54, 0, 0, 0, i]
}

fn best(reps: usize, mut run: impl FnMut() -> Duration) -> Duration {
    (0..reps).map(|_| run()).min().unwrap_or_default()
}

/// Unicast A -> B, `len`-byte frames, taken out at B in batches of 64.
fn unicast(frames: usize, len: usize) -> Duration {
    let (mut s, p) = switch(2);
    let f = frame(mac(0), mac(1), len);
    let start = Instant::now();
    let mut got = 0;
    for i in 0..frames {
        s.send(p[0], &f, 0).unwrap();
        if i % 64 == 63 {
            while let Some(r) = s.recv(p[1]) {
                got += black_box(r).len();
            }
        }
    }
    while let Some(r) = s.recv(p[1]) {
        got += black_box(r).len();
    }
    assert_eq!(got, frames * len);
    start.elapsed()
}

/// The reference: the same frames copied into a queue and taken out.
fn reference(frames: usize, len: usize, copies: usize) -> Duration {
    let f = frame(mac(0), mac(1), len);
    let mut q: VecDeque<Vec<u8>> = VecDeque::new();
    let start = Instant::now();
    let mut got = 0;
    for i in 0..frames {
        for _ in 0..copies {
            q.push_back(black_box(&f).clone());
        }
        if i % 64 == 63 {
            while let Some(r) = q.pop_front() {
                got += black_box(r).len();
            }
        }
    }
    while let Some(r) = q.pop_front() {
        got += black_box(r).len();
    }
    assert_eq!(got, frames * len * copies);
    start.elapsed()
}

/// Broadcast from one of `ports` ports to all the others.
fn broadcast(frames: usize, len: usize, ports: u8) -> Duration {
    let (mut s, p) = switch(ports);
    let f = frame(mac(0), [0xff; 6], len);
    let start = Instant::now();
    for i in 0..frames {
        s.send(p[0], &f, 0).unwrap();
        if i % 64 == 63 {
            for q in &p[1..] {
                while let Some(r) = s.recv(*q) {
                    black_box(r);
                }
            }
        }
    }
    start.elapsed()
}

fn main() {
    let frames = env_usize("SWITCH_BENCH_FRAMES", 200_000);
    let reps = env_usize("SWITCH_BENCH_REPS", 3);
    println!("switch throughput, {frames} frames per case, best of {reps}");
    println!("case                        switch frames/s   MB/s   reference frames/s   ratio");
    let cases: [(&str, usize, usize); 4] = [
        ("unicast 1514 B", 1514, 0),
        ("unicast 60 B", 60, 0),
        ("broadcast 1514 B to 3", 1514, 4),
        ("broadcast 60 B to 3", 60, 4),
    ];
    for (name, len, ports) in cases {
        let copies = if ports == 0 { 1 } else { ports - 1 };
        let ours = best(reps, || {
            if ports == 0 {
                unicast(frames, len)
            } else {
                broadcast(frames, len, ports as u8)
            }
        });
        let base = best(reps, || reference(frames, len, copies));
        let per_s = |d: Duration| frames as f64 / d.as_secs_f64();
        println!(
            "{name:<27} {:>15.0} {:>6.0} {:>20.0} {:>7.2}",
            per_s(ours),
            per_s(ours) * (len * copies) as f64 / 1e6,
            per_s(base),
            ours.as_secs_f64() / base.as_secs_f64(),
        );
    }
}
