"""ChatNexus inference: the speculative-decoding engine (`inference.engine`) and its glue."""
