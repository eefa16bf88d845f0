//! Test topologies: network namespaces, veth pairs, cgroups, all removed on drop.
