//! Tests of the install manifests.
