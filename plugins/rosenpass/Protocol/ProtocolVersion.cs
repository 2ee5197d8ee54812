namespace Modular.Plugins.Rosenpass.Protocol;

/// <summary>
/// Which keyed hash a peer uses, named as upstream Rosenpass names them (ProtocolVersion).
/// Everything derived from the hash (labels, chaining key, mac, biscuit AD, output key) differs
/// between the two, so both sides of an exchange must agree on it.
/// </summary>
public enum ProtocolVersion
{
    /// <summary>"Incorrect HMAC" over keyed BLAKE2b; upstream's default.</summary>
    V02,

    /// <summary>SHAKE256 over key || data; the official handshake vector uses it.</summary>
    V03,
}
