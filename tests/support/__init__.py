"""What the tests share: process helpers, probe actors, trees run as real root processes and a
NAT simulator."""
