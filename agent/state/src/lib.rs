//! The cluster model the agent acts on: Kubernetes-shaped objects in, desired
//! datapath and routing state out.
