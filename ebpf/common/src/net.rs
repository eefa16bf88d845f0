//! Addresses as the kernel programs store them.

/// An IPv6 or IPv4-mapped address: four words in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Addr {
    /// The address words, as `user_ip6` presents them.
    pub words: [u32; 4],
}

crate::impl_pod!(Addr);

/// The third word of an IPv4-mapped address (`::ffff:0:0/96`), in network byte order.
pub const V4_MAPPED_PREFIX: u32 = u32::from_be(0x0000_ffff);

impl Addr {
    /// Wraps an IPv4 address given as `user_ip4` holds it (network byte order).
    #[inline(always)]
    pub const fn from_v4_be(ip_be: u32) -> Self {
        Self {
            words: [0, 0, V4_MAPPED_PREFIX, ip_be],
        }
    }

    /// Whether the address is IPv4-mapped.
    #[inline(always)]
    pub const fn is_v4(&self) -> bool {
        self.words[0] == 0 && self.words[1] == 0 && self.words[2] == V4_MAPPED_PREFIX
    }

    /// The IPv4 address in network byte order, if this is an IPv4-mapped address.
    #[inline(always)]
    pub const fn v4_be(&self) -> Option<u32> {
        if self.is_v4() {
            Some(self.words[3])
        } else {
            None
        }
    }

    /// Whether the address is a loopback address (`127.0.0.0/8` or `::1`).
    ///
    /// Loopback sockets of different network namespaces share addresses, so
    /// the datapath never keys anything on them.
    #[inline(always)]
    pub const fn is_loopback(&self) -> bool {
        if self.is_v4() {
            (u32::from_be(self.words[3]) >> 24) == 127
        } else {
            self.words[0] == 0
                && self.words[1] == 0
                && self.words[2] == 0
                && self.words[3] == u32::from_be(1)
        }
    }
}

#[cfg(feature = "user")]
mod std_conv {
    extern crate std;
    use super::Addr;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    impl From<Ipv4Addr> for Addr {
        fn from(ip: Ipv4Addr) -> Self {
            Addr::from_v4_be(u32::from_ne_bytes(ip.octets()))
        }
    }

    impl From<Ipv6Addr> for Addr {
        fn from(ip: Ipv6Addr) -> Self {
            if let Some(v4) = ip.to_ipv4_mapped() {
                return v4.into();
            }
            let o = ip.octets();
            let mut words = [0u32; 4];
            for (i, w) in words.iter_mut().enumerate() {
                *w = u32::from_ne_bytes([o[i * 4], o[i * 4 + 1], o[i * 4 + 2], o[i * 4 + 3]]);
            }
            Addr { words }
        }
    }

    impl From<IpAddr> for Addr {
        fn from(ip: IpAddr) -> Self {
            match ip {
                IpAddr::V4(v4) => v4.into(),
                IpAddr::V6(v6) => v6.into(),
            }
        }
    }

    impl From<Addr> for IpAddr {
        fn from(a: Addr) -> Self {
            if let Some(v4) = a.v4_be() {
                return IpAddr::V4(Ipv4Addr::from(v4.to_ne_bytes()));
            }
            let mut o = [0u8; 16];
            for (i, w) in a.words.iter().enumerate() {
                o[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(o))
        }
    }
}

#[cfg(all(test, feature = "user"))]
mod tests {
    extern crate std;
    use super::Addr;
    use std::net::IpAddr;

    #[test]
    fn v4_round_trip_and_mapping() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let a = Addr::from(ip);
        assert!(a.is_v4());
        assert_eq!(a.words[3].to_ne_bytes(), [10, 1, 2, 3]);
        assert_eq!(IpAddr::from(a), ip);
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(Addr::from(mapped), a);
    }

    #[test]
    fn v6_round_trip() {
        let ip: IpAddr = "fd00::1:2".parse().unwrap();
        let a = Addr::from(ip);
        assert!(!a.is_v4());
        assert_eq!(IpAddr::from(a), ip);
    }

    #[test]
    fn loopback_detection() {
        for (s, lo) in [
            ("127.0.0.1", true),
            ("127.9.9.9", true),
            ("::1", true),
            ("10.0.0.1", false),
            ("fd00::1", false),
        ] {
            let ip: IpAddr = s.parse().unwrap();
            assert_eq!(Addr::from(ip).is_loopback(), lo, "{s}");
        }
    }
}
