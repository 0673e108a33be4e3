//! An in-memory network for the four MS-RPCH roles: one client, several proxy nodes (each
//! able to play inbound and outbound proxy), one server with an echoing backend, and a
//! virtual clock. HTTP requests and TCP legs are queues of PDUs; which node a new HTTP request
//! reaches is the test's choice, so R1 (another node) and R2 (the same node) recycling can be
//! forced. Nothing here does I/O or reads the real clock beyond one `Instant::now()` origin.

#![allow(
    dead_code,
    clippy::panic,
    clippy::unwrap_used,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap as HashMap, BTreeSet as HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rpch_proto::client::{ChannelId, ClientConfig, ClientEvent, ClientVc};
use rpch_proto::inbound::{InboundConfig, InboundEvent, InboundProxy, InboundState};
use rpch_proto::outbound::{OutboundConfig, OutboundEvent, OutboundProxy, OutboundState, ToClient};
use rpch_proto::pdu::header::{CommonHeader, PFC_FIRST_FRAG, PFC_LAST_FRAG, PacketType};
use rpch_proto::server::{
    Dest, FirstPdu, LegId, ServerConfig, ServerEvent, ServerVc, classify_first_pdu,
};
use rpch_proto::{Cookie, ProtocolError};

pub const CLIENT_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    In,
    Out,
}

/// Settings of a network.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub client_window: u32,
    pub proxy_window: u32,
    pub server_window: u32,
    pub connection_timeout_ms: u32,
    pub in_lifetime: u32,
    pub out_lifetime: u32,
    pub nodes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            client_window: 65_536,
            proxy_window: 65_536,
            server_window: 65_536,
            connection_timeout_ms: 120_000,
            in_lifetime: 0x4000_0000,
            out_lifetime: 0x4000_0000,
            nodes: 1,
        }
    }
}

/// One proxy node: at most one inbound and one outbound machine for the test's virtual
/// connection (a finished one is replaced by a fresh one, as a real proxy's table would).
#[derive(Default)]
struct Node {
    ip: Option<InboundProxy>,
    ip_leg: Option<LegId>,
    op: Option<OutboundProxy>,
    op_leg: Option<LegId>,
}

pub struct Net {
    pub now: Instant,
    pub settings: Settings,
    pub client: ClientVc,
    nodes: Vec<Node>,
    pub server: Option<ServerVc>,
    /// Which node each client channel (HTTP request) went to.
    channel_node: HashMap<ChannelId, (usize, Kind)>,
    /// Channels whose first PDU a proxy machine has seen.
    channel_known: HashSet<ChannelId>,
    /// OUT response bodies not yet read by the client, per channel; and whether the 200 head
    /// was sent.
    out_pipes: HashMap<ChannelId, VecDeque<Bytes>>,
    out_head_sent: HashSet<ChannelId>,
    /// The OUT channel the client reads.
    reading: ChannelId,
    /// Legs: to the server, with whether the server has seen the first PDU.
    leg_node: HashMap<LegId, (usize, Kind)>,
    to_server: HashMap<LegId, VecDeque<Bytes>>,
    leg_known: HashSet<LegId>,
    next_id: u64,
    /// Node choice for new requests: the test's routing function.
    pub route: Box<dyn FnMut(bool, usize) -> usize>,
    pub requests: usize,
    pub delivered: Vec<Bytes>,
    pub backend_seen: usize,
    /// Echo backend on: server PDUs to the backend come back.
    pub echo: bool,
    /// Legs of this kind are held back from the server (to force an arrival order, or to
    /// lose a leg altogether).
    pub hold: Option<Kind>,
    /// Recyclings the server reported: (IN?, R1?).
    pub server_recycles: Vec<(bool, bool)>,
}

pub fn cookie(n: u8) -> Cookie {
    Cookie([n; 16])
}

/// An RPC request PDU of exactly `len` bytes whose payload encodes `seq`.
pub fn rpc_pdu(seq: u32, len: usize) -> Bytes {
    let mut out = Vec::with_capacity(len);
    CommonHeader::new(
        PacketType::Request,
        PFC_FIRST_FRAG | PFC_LAST_FRAG,
        len as u16,
        seq,
    )
    .write(&mut out);
    out.extend(std::iter::repeat_n((seq % 251) as u8, len - out.len()));
    Bytes::from(out)
}

impl Net {
    pub fn new(settings: Settings) -> Self {
        let in_ch = ChannelId(1);
        let out_ch = ChannelId(2);
        let client = ClientVc::new(
            ClientConfig {
                vc: cookie(1),
                in_channel: cookie(2),
                out_channel: cookie(3),
                association_group: cookie(4),
                receive_window: settings.client_window,
                in_channel_lifetime: settings.in_lifetime,
                keepalive_ms: 300_000,
            },
            in_ch,
            out_ch,
        );
        let mut net = Self {
            now: Instant::now(),
            settings,
            client,
            nodes: (0..settings.nodes).map(|_| Node::default()).collect(),
            server: None,
            channel_node: HashMap::new(),
            channel_known: HashSet::new(),
            out_pipes: HashMap::new(),
            out_head_sent: HashSet::new(),
            reading: out_ch,
            leg_node: HashMap::new(),
            to_server: HashMap::new(),
            leg_known: HashSet::new(),
            next_id: 100,
            route: Box::new(|_, _| 0),
            requests: 0,
            delivered: Vec::new(),
            backend_seen: 0,
            echo: true,
            hold: None,
            server_recycles: Vec::new(),
        };
        net.channel_node.insert(in_ch, (0, Kind::In));
        net.channel_node.insert(out_ch, (0, Kind::Out));
        net
    }

    /// Routes the first two requests (IN, OUT) to the given nodes.
    pub fn place_initial(&mut self, in_node: usize, out_node: usize) {
        self.channel_node.insert(ChannelId(1), (in_node, Kind::In));
        self.channel_node
            .insert(ChannelId(2), (out_node, Kind::Out));
    }

    fn fresh(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn ip_config(&self) -> InboundConfig {
        InboundConfig {
            receive_window: self.settings.proxy_window,
            connection_timeout_ms: self.settings.connection_timeout_ms,
        }
    }

    fn op_config(&self) -> OutboundConfig {
        OutboundConfig {
            receive_window: self.settings.proxy_window,
            connection_timeout_ms: self.settings.connection_timeout_ms,
            channel_lifetime: self.settings.out_lifetime,
        }
    }

    /// A client PDU on `ch` reaches its node's proxy.
    fn client_to_proxy(&mut self, ch: ChannelId, pdu: Bytes) -> Result<(), ProtocolError> {
        let (node, kind) = self.channel_node[&ch];
        let first = self.channel_known.insert(ch);
        let ip_config = self.ip_config();
        let op_config = self.op_config();
        let n = &mut self.nodes[node];
        match kind {
            Kind::In => {
                if first {
                    let live = n.ip.as_ref().is_some_and(|ip| {
                        !matches!(ip.state(), InboundState::Finished | InboundState::Draining)
                    });
                    if live && rpch_proto::rts::RtsPdu::decode(&pdu).is_ok_and(|r| r.flags == 4) {
                        return n.ip.as_mut().unwrap().attach_successor(ch, &pdu);
                    }
                    n.ip = Some(InboundProxy::new(ip_config, ch));
                    n.ip_leg = None;
                }
                n.ip.as_mut().unwrap().handle_client_pdu(ch, pdu)
            }
            Kind::Out => {
                if first {
                    let live = n.op.as_ref().is_some_and(|op| {
                        !matches!(
                            op.state(),
                            OutboundState::Finished | OutboundState::Draining
                        )
                    });
                    if live && rpch_proto::rts::RtsPdu::decode(&pdu).is_ok_and(|r| r.flags == 4) {
                        return n.op.as_mut().unwrap().attach_successor(ch, &pdu);
                    }
                    n.op = Some(OutboundProxy::new(op_config, ch));
                    n.op_leg = None;
                }
                n.op.as_mut().unwrap().handle_client_pdu(ch, pdu)
            }
        }
    }

    /// Moves every PDU that can move; returns whether anything moved.
    pub fn step(&mut self) -> Result<bool, ProtocolError> {
        let now = self.now;
        let mut moved = false;

        // Client events: open successor requests, switch OUT reading.
        while let Some(event) = self.client.poll_event() {
            moved = true;
            match event {
                ClientEvent::OpenInSuccessor => {
                    let ch = ChannelId(self.fresh());
                    self.requests += 1;
                    let node = (self.route)(true, self.requests);
                    self.channel_node.insert(ch, (node, Kind::In));
                    self.client.in_successor_opened(ch);
                }
                ClientEvent::OpenOutSuccessor => {
                    let ch = ChannelId(self.fresh());
                    self.requests += 1;
                    let node = (self.route)(false, self.requests);
                    self.channel_node.insert(ch, (node, Kind::Out));
                    self.client.out_successor_opened(ch);
                }
                ClientEvent::SwitchOut { to, .. } => self.reading = to,
                ClientEvent::CloseIn(_) => {}
            }
        }
        // Client -> proxies, every request body.
        let channels: Vec<ChannelId> = self.channel_node.keys().copied().collect();
        for ch in channels {
            while let Some(pdu) = self.client.poll_transmit(ch, now) {
                self.client_to_proxy(ch, pdu)?;
                moved = true;
            }
        }
        // Proxies: events, and PDUs to the server.
        for node in 0..self.nodes.len() {
            let mut new_legs = Vec::new();
            if let Some(ip) = self.nodes[node].ip.as_mut() {
                while let Some(event) = ip.poll_event() {
                    moved = true;
                    if let InboundEvent::ConnectRequested { .. } = event {
                        ip.server_connected(CLIENT_ADDR);
                        new_legs.push(Kind::In);
                    }
                }
            }
            if let Some(op) = self.nodes[node].op.as_mut() {
                while let Some(event) = op.poll_event() {
                    moved = true;
                    if let OutboundEvent::ConnectRequested { .. } = event {
                        op.server_connected();
                        new_legs.push(Kind::Out);
                    }
                }
            }
            for kind in new_legs {
                let leg = LegId(self.fresh());
                self.leg_node.insert(leg, (node, kind));
                match kind {
                    Kind::In => self.nodes[node].ip_leg = Some(leg),
                    Kind::Out => self.nodes[node].op_leg = Some(leg),
                }
            }
            let n = &mut self.nodes[node];
            if let (Some(ip), Some(leg)) = (n.ip.as_mut(), n.ip_leg) {
                while let Some(pdu) = ip.poll_transmit_to_server() {
                    self.to_server.entry(leg).or_default().push_back(pdu);
                    moved = true;
                }
            }
            if let (Some(op), Some(leg)) = (n.op.as_mut(), n.op_leg) {
                while let Some(pdu) = op.poll_transmit_to_server() {
                    self.to_server.entry(leg).or_default().push_back(pdu);
                    moved = true;
                }
            }
        }
        // Server side: new legs and PDUs.
        let legs: Vec<LegId> = self.to_server.keys().copied().collect();
        for leg in legs {
            if !self.leg_known.contains(&leg) && Some(self.leg_node[&leg].1) == self.hold {
                continue;
            }
            while let Some(pdu) = self.to_server.get_mut(&leg).and_then(VecDeque::pop_front) {
                moved = true;
                if self.leg_known.insert(leg) {
                    let first = classify_first_pdu(&pdu)?;
                    match (&mut self.server, &first) {
                        (None, _) => {
                            self.server = Some(ServerVc::new(
                                ServerConfig {
                                    receive_window: self.settings.server_window,
                                    setup_timeout: Duration::from_secs(60),
                                },
                                &first,
                                leg,
                                now,
                            )?)
                        }
                        (Some(vc), FirstPdu::ConnA2(_) | FirstPdu::ConnB2(_)) => {
                            vc.complete(&first, leg)?
                        }
                        (Some(vc), _) => vc.attach_leg(&first, leg, now)?,
                    }
                } else if let Some(vc) = self.server.as_mut() {
                    vc.handle_pdu(leg, pdu)?;
                }
            }
        }
        if let Some(vc) = self.server.as_mut() {
            while let Some(event) = vc.poll_event() {
                moved = true;
                if let ServerEvent::Recycled { leg, r1 } = event {
                    self.server_recycles
                        .push((leg == rpch_proto::server::Leg::In, r1));
                }
            }
            while let Some(pdu) = vc.poll_transmit(Dest::Backend, now) {
                self.backend_seen += 1;
                if self.echo {
                    vc.handle_backend_pdu(pdu)?;
                }
                moved = true;
            }
            let legs: Vec<LegId> = self.leg_node.keys().copied().collect();
            for leg in legs {
                while let Some(pdu) = vc.poll_transmit(Dest::Leg(leg), now) {
                    moved = true;
                    let (node, kind) = self.leg_node[&leg];
                    let n = &mut self.nodes[node];
                    match kind {
                        Kind::In => n.ip.as_mut().unwrap().handle_server_pdu(pdu)?,
                        Kind::Out => n.op.as_mut().unwrap().handle_server_pdu(pdu)?,
                    }
                }
            }
        }
        // Outbound proxies -> OUT response bodies.
        let out_channels: Vec<ChannelId> = self
            .channel_node
            .iter()
            .filter(|(_, (_, k))| *k == Kind::Out)
            .map(|(c, _)| *c)
            .collect();
        for ch in out_channels {
            let (node, _) = self.channel_node[&ch];
            if let Some(op) = self.nodes[node].op.as_mut() {
                while let Some(out) = op.poll_transmit_to_client(ch, now) {
                    moved = true;
                    match out {
                        ToClient::ResponseHead => {
                            assert!(self.out_head_sent.insert(ch), "a second response head");
                        }
                        ToClient::Pdu(pdu) => {
                            assert!(
                                self.out_head_sent.contains(&ch),
                                "bytes on an OUT channel before its 200 header"
                            );
                            self.out_pipes.entry(ch).or_default().push_back(pdu);
                        }
                    }
                }
            }
        }
        // The client reads its current OUT channel.
        loop {
            let reading = self.reading;
            let Some(pdu) = self
                .out_pipes
                .get_mut(&reading)
                .and_then(VecDeque::pop_front)
            else {
                break;
            };
            self.client.handle_out_pdu(pdu)?;
            moved = true;
            if self.reading != reading {
                // Switched: whatever else the old channel carried is ignored, as Windows
                // clients ignore bytes after OUT_R2/B3.
                continue;
            }
        }
        while let Some(pdu) = self.client.poll_received() {
            self.delivered.push(pdu);
            moved = true;
        }
        Ok(moved)
    }

    pub fn settle(&mut self) -> Result<(), ProtocolError> {
        for _ in 0..10_000_000 {
            if !self.step()? {
                return Ok(());
            }
        }
        panic!("the network never settled");
    }

    pub fn advance(&mut self, by: Duration) -> Result<(), ProtocolError> {
        self.now += by;
        for node in &mut self.nodes {
            if let Some(op) = node.op.as_mut() {
                op.handle_timeout(self.now);
            }
        }
        self.client.handle_timeout(self.now);
        if let Some(server) = self.server.as_mut() {
            server.handle_timeout(self.now)?;
        }
        self.settle()
    }

    pub fn ip(&self, node: usize) -> Option<&InboundProxy> {
        self.nodes[node].ip.as_ref()
    }

    pub fn op(&self, node: usize) -> Option<&OutboundProxy> {
        self.nodes[node].op.as_ref()
    }

    pub fn op_mut(&mut self, node: usize) -> Option<&mut OutboundProxy> {
        self.nodes[node].op.as_mut()
    }

    pub fn ip_mut(&mut self, node: usize) -> Option<&mut InboundProxy> {
        self.nodes[node].ip.as_mut()
    }
}
