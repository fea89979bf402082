//! AF_XDP sockets (placeholder: being written).
