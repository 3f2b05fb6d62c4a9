"""Local ingress: the embedded MQTT broker and the CoAP server, with per-client keys,
ACLs, signed messages and acknowledgement after commit (docs/local-ingress.md)."""
