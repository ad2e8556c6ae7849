"""Access control lists: policies (what may be done where) and the tokens that carry them.

    policy text (HCL/JSON) --policy.parse--> Rules --Acl.merge (deny wins)--> Acl
    request --server/acl.py (token -> policies -> Acl)--> Acl.allows(capability, namespace)

Pure: the server keeps tokens and policies in the store and asks this package what they allow.
"""
