namespace Modular.Plugins.Rosenpass.Protocol;

/// <summary>Why a Rosenpass message was rejected; lets callers count and tests assert the reason.</summary>
public enum RosenpassError
{
    /// <summary>Empty, or not the exact length of its message type.</summary>
    WrongLength,

    /// <summary>The first byte names no Rosenpass message type.</summary>
    UnknownMessageType,

    /// <summary>The envelope mac does not verify against our static public key (either hash version).</summary>
    BadMac,

    /// <summary>A session id matches no handshake or session of ours.</summary>
    UnknownSession,

    /// <summary>The message fits no state: e.g. a RespHello when the handshake already waits for EmptyData.</summary>
    UnexpectedMessage,

    /// <summary>The sender's peer id is not one of our peers.</summary>
    UnknownPeer,

    /// <summary>An AEAD tag (pidi, auth, biscuit, EmptyData, cookie) failed: tampering or wrong keys.</summary>
    AuthenticationFailed,

    /// <summary>The peer uses the other hash version than the one configured for it.</summary>
    VersionMismatch,

    /// <summary>A replayed message: an old biscuit number or a stale EmptyData counter.</summary>
    Replayed,

    /// <summary>Under load, a message type that is not processed without a cookie.</summary>
    NotProcessedUnderLoad,
}

/// <summary>
/// A received Rosenpass message was rejected. Thrown before any state changes, so the
/// <see cref="CryptoServer"/> stays usable and a later good message still completes an exchange.
/// Never carries key material.
/// </summary>
public sealed class RosenpassProtocolException : Exception
{
    public RosenpassProtocolException()
    {
    }

    public RosenpassProtocolException(string message)
        : base(message)
    {
    }

    public RosenpassProtocolException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    public RosenpassProtocolException(RosenpassError error, string message)
        : base(message)
    {
        Error = error;
    }

    public RosenpassProtocolException(RosenpassError error, string message, Exception innerException)
        : base(message, innerException)
    {
        Error = error;
    }

    /// <summary>Why the message was rejected.</summary>
    public RosenpassError Error { get; }
}
