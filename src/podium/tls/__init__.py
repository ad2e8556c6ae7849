"""The cluster's trust: its certificate authority, certificates, identities and TLS contexts.

    pki.py        keys, CA, certificates, CSRs, cross-signing (the `cryptography` package)
    identity.py   who a peer is, read from its certificate: role + name (node id for agents)
    files.py      credentials on disk (ca.pem, cert.pem, key.pem; keys 0600)
    context.py    SSL contexts for servers and clients; hot reload without a restart
    authority.py  a server's CA: join tokens, issue and renew certificates, rotate the CA
    client.py     the CLI's credentials: flags, PODIUM_* variables, the CLI config file

Every link is mutual TLS: a client checks that the peer is a *server* (or a given node)
by the name in its certificate, and a server reads the caller's role from its
certificate. No crypto is written here by hand.
"""
