"""Domain: access codes, memberships, tokens, keys, audit. No Flask, no app config."""
