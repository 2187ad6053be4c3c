//! The node agent (kubelet + runtime). Only the image store exists so far;
//! the sandbox, runtime, pod network and service proxy come next.

pub mod images;
