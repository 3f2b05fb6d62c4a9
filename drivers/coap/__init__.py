"""The coap driver: polls or observes resources on CoAP devices (RFC 7252, RFC 7641)."""
