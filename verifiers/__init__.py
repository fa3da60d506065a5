"""Evidence verifiers: one module per scheme, plus the BN254/Groth16 core.

Every ``verify`` function here returns an attestation or raises
:class:`verifiers.errors.VerificationError`; none returns a bare bool.
"""
