"""A NAT lab for holepunch: network namespaces, veth or TUN links and iptables NAT, with a
rendezvous service on an "internet" and a worker behind each of two NAT routers.
See lab/README.md; ``python -m lab up --help``."""
