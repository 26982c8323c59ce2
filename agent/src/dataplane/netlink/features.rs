//! `ethtool -K DEV FEATURE on|off` over ethtool's generic netlink family
//! (`ETHTOOL_MSG_FEATURES_SET`), which the `ethtool` crate reads but cannot
//! write. Only the request is ours; the family id is resolved and cached by
//! `genetlink`.
//!
//! The one use: GRO off on a VXLAN device. Its GRO merges decapsulated
//! packets a second time, after the underlay device's GRO already merged
//! them through the VXLAN socket's own GRO handler (or they arrived whole
//! through a veth); the second pass adds a deferral per packet and, measured
//! here, 1.5 us to a container's round trip, for no throughput.

use futures::StreamExt;
use genetlink::GenetlinkHandle;
use netlink_packet_core::{
    DecodeError, Emitable, NLA_F_NESTED, NLM_F_ACK, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload, Nla,
    ParseableParametrized,
};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};

const ETHTOOL_MSG_FEATURES_SET: u8 = 12;
const ETHTOOL_GENL_VERSION: u8 = 1;
const ETHTOOL_A_FEATURES_HEADER: u16 = 1;
const ETHTOOL_A_FEATURES_WANTED: u16 = 3;
const ETHTOOL_A_HEADER_DEV_NAME: u16 = 2;
const ETHTOOL_A_HEADER_FLAGS: u16 = 3;
/// Answer with an ACK only, not with the features as they now are.
const ETHTOOL_FLAG_OMIT_REPLY: u32 = 1 << 1;
const ETHTOOL_A_BITSET_BITS: u16 = 3;
const ETHTOOL_A_BITSET_BITS_BIT: u16 = 1;
const ETHTOOL_A_BITSET_BIT_NAME: u16 = 2;
const ETHTOOL_A_BITSET_BIT_VALUE: u16 = 3;

/// The kernel's name of the GRO feature (`ethtool -K DEV gro ...`).
pub(super) const GRO: &str = "rx-gro";

/// A request to set named features of one device; the features it does not
/// name keep their state (a bitset without `NOMASK` lists only the bits to change).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct FeaturesSet {
    dev: String,
    features: Vec<(String, bool)>,
}

impl FeaturesSet {
    pub(super) fn new(dev: &str, features: &[(&str, bool)]) -> Self {
        let features = features.iter().map(|(name, on)| (name.to_string(), *on)).collect();
        FeaturesSet { dev: dev.to_string(), features }
    }

    /// The attributes, nested as the kernel wants them.
    fn attributes(&self) -> Vec<Attr> {
        let header = vec![
            Attr::Str(ETHTOOL_A_HEADER_DEV_NAME, self.dev.clone()),
            Attr::U32(ETHTOOL_A_HEADER_FLAGS, ETHTOOL_FLAG_OMIT_REPLY),
        ];
        let bits = self
            .features
            .iter()
            .map(|(name, on)| {
                let mut bit = vec![Attr::Str(ETHTOOL_A_BITSET_BIT_NAME, name.clone())];
                if *on {
                    bit.push(Attr::Flag(ETHTOOL_A_BITSET_BIT_VALUE));
                }
                Attr::Nested(ETHTOOL_A_BITSET_BITS_BIT, bit)
            })
            .collect();
        vec![
            Attr::Nested(ETHTOOL_A_FEATURES_HEADER, header),
            Attr::Nested(ETHTOOL_A_FEATURES_WANTED, vec![Attr::Nested(ETHTOOL_A_BITSET_BITS, bits)]),
        ]
    }
}

impl GenlFamily for FeaturesSet {
    fn family_name() -> &'static str {
        "ethtool"
    }

    fn command(&self) -> u8 {
        ETHTOOL_MSG_FEATURES_SET
    }

    fn version(&self) -> u8 {
        ETHTOOL_GENL_VERSION
    }
}

impl Emitable for FeaturesSet {
    fn buffer_len(&self) -> usize {
        self.attributes().as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attributes().as_slice().emit(buffer)
    }
}

/// Never sent by the kernel (the request asks it to omit its reply), but
/// `genetlink` needs a way to read one.
impl ParseableParametrized<[u8], GenlHeader> for FeaturesSet {
    fn parse_with_param(_: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        Err(DecodeError::from(format!("unexpected ethtool reply (command {})", header.cmd)))
    }
}

/// One netlink attribute of the request.
#[derive(Debug)]
enum Attr {
    Str(u16, String),
    U32(u16, u32),
    Flag(u16),
    Nested(u16, Vec<Attr>),
}

impl Nla for Attr {
    fn value_len(&self) -> usize {
        match self {
            Attr::Str(_, s) => s.len() + 1,
            Attr::U32(..) => 4,
            Attr::Flag(_) => 0,
            Attr::Nested(_, attrs) => attrs.as_slice().buffer_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Attr::Str(kind, _) | Attr::U32(kind, _) | Attr::Flag(kind) => *kind,
            Attr::Nested(kind, _) => kind | NLA_F_NESTED,
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Attr::Str(_, s) => {
                buffer[..s.len()].copy_from_slice(s.as_bytes());
                buffer[s.len()] = 0;
            }
            Attr::U32(_, v) => buffer[..4].copy_from_slice(&v.to_ne_bytes()),
            Attr::Flag(_) => {}
            Attr::Nested(_, attrs) => attrs.as_slice().emit(buffer),
        }
    }
}

/// Sends `request` and waits for the kernel's ACK; a failure is told as
/// `ethtool -K DEV: why`.
pub(super) async fn set(h: &GenetlinkHandle, request: FeaturesSet) -> Result<(), String> {
    let what = format!("ethtool -K {}", request.dev);
    let mut msg = NetlinkMessage::from(GenlMessage::from_payload(request));
    msg.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    let mut h = h.clone();
    let mut replies = h.request(msg).await.map_err(|e| format!("{what}: {e}"))?;
    while let Some(reply) = replies.next().await {
        let reply = reply.map_err(|e| format!("{what}: reading the answer: {e}"))?;
        if let NetlinkPayload::Error(e) = reply.payload
            && e.code.is_some()
        {
            return Err(format!("{what}: {}", e.to_io()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The attributes after the genetlink header, laid out as
    /// `include/uapi/linux/ethtool_netlink.h` and `Documentation/networking/
    /// ethtool-netlink.rst` describe them (the real kernel accepting them is
    /// checked by the agent's dataplane test).
    #[test]
    fn gro_off_is_encoded_as_ethtool_sends_it() {
        let req = FeaturesSet::new("ovvx4096", &[(GRO, false)]);
        let mut buf = vec![0u8; req.buffer_len()];
        req.emit(&mut buf);
        #[rustfmt::skip]
        let want: Vec<u8> = [
            // ETHTOOL_A_FEATURES_HEADER (nested), 28 bytes
            &[28, 0, 0x01, 0x80][..],
            // ETHTOOL_A_HEADER_DEV_NAME "ovvx4096\0" (13 bytes, padded to 16)
            &[13, 0, 2, 0], b"ovvx4096", &[0, 0, 0, 0],
            // ETHTOOL_A_HEADER_FLAGS = OMIT_REPLY
            &[8, 0, 3, 0, 2, 0, 0, 0],
            // ETHTOOL_A_FEATURES_WANTED (nested) > BITS (nested) > BIT (nested) > NAME "rx-gro\0"
            &[24, 0, 0x03, 0x80], &[20, 0, 0x03, 0x80], &[16, 0, 0x01, 0x80],
            &[11, 0, 2, 0], b"rx-gro", &[0, 0],
        ]
        .concat();
        assert_eq!(buf, want);
    }

    #[test]
    fn a_feature_turned_on_carries_the_value_flag() {
        let req = FeaturesSet::new("x", &[(GRO, true)]);
        let mut buf = vec![0u8; req.buffer_len()];
        req.emit(&mut buf);
        assert!(buf.ends_with(&[b'r', b'x', b'-', b'g', b'r', b'o', 0, 0, 4, 0, 3, 0]), "{buf:?}");
    }
}
