using System.Buffers.Binary;
using System.Net;
using Modular.Abstractions.WireGuard;

namespace Modular.Server.Store;

/// <summary>A registered peer.</summary>
/// <param name="DnsLabel">Unique within the account: the hostname, or hostname-N when taken.</param>
/// <param name="OverlayIp">Host-order IPv4 in 100.64.0.0/10.</param>
/// <param name="RosenpassFingerprint">Fingerprint of the peer's Rosenpass public key; never the key.</param>
/// <param name="LoginExpiresAt">When the peer must register again; null: never.</param>
public sealed record PeerRecord(
    string Id,
    WgKey PublicKey,
    string Hostname,
    string DnsLabel,
    uint OverlayIp,
    DateTimeOffset RegisteredAt,
    DateTimeOffset LastSeen,
    string AgentVersion,
    string Os,
    IReadOnlyList<string> Features,
    byte[] RosenpassFingerprint,
    string RosenpassAddr,
    DateTimeOffset? LoginExpiresAt,
    string SetupKeyId)
{
    public IPAddress OverlayAddress => OverlayNetwork.ToAddress(OverlayIp);

    public bool IsExpired(DateTimeOffset now) => LoginExpiresAt is { } expires && expires <= now;
}

/// <summary>What an agent tells about itself at registration and login.</summary>
public sealed record PeerMetadata(string Hostname, string AgentVersion, string Os, IReadOnlyList<string> Features, byte[] RosenpassFingerprint, string RosenpassAddr)
{
    /// <summary>Whether storing this would change <paramref name="peer"/> (the hostname compared as stored, sanitized).</summary>
    public bool DiffersFrom(PeerRecord peer)
        => peer.Hostname != SqliteStore.SanitizeHostname(Hostname) || peer.AgentVersion != AgentVersion || peer.Os != Os
            || !peer.Features.SequenceEqual(Features.Where(f => f.Length > 0)) || !peer.RosenpassFingerprint.AsSpan().SequenceEqual(RosenpassFingerprint)
            || peer.RosenpassAddr != RosenpassAddr;
}

/// <summary>A setup key as stored: the key itself is only ever kept as a hash.</summary>
/// <param name="UsageLimit">0: unlimited.</param>
public sealed record SetupKeyRecord(
    string Id,
    string Name,
    bool Reusable,
    int UsageLimit,
    int UsedCount,
    DateTimeOffset CreatedAt,
    DateTimeOffset? ExpiresAt,
    bool Revoked,
    DateTimeOffset? LastUsedAt)
{
    /// <summary>Null when the key can register a peer at <paramref name="now"/>; else why not.</summary>
    public SetupKeyFailure? Check(DateTimeOffset now) =>
        Revoked ? SetupKeyFailure.Revoked
        : ExpiresAt is { } e && e <= now ? SetupKeyFailure.Expired
        : UsageLimit > 0 && UsedCount >= UsageLimit ? SetupKeyFailure.Exhausted
        : null;

    public string State(DateTimeOffset now) => Check(now)?.ToString().ToLowerInvariant() ?? "valid";
}

/// <summary>What `setup-key create` asks for. A one-off key has a usage limit of 1.</summary>
/// <param name="UsageLimit">0: unlimited (reusable keys only).</param>
public sealed record NewSetupKey(string Name, bool Reusable, int UsageLimit, TimeSpan? ExpiresIn);

public enum SetupKeyFailure
{
    Unknown,
    Expired,
    Exhausted,
    Revoked,
}

/// <summary>Registration refused because of the setup key.</summary>
public sealed class SetupKeyRejectedException : Exception
{
    public SetupKeyRejectedException(SetupKeyFailure reason)
        : base(reason switch
        {
            SetupKeyFailure.Unknown => "setup key is not valid",
            SetupKeyFailure.Expired => "setup key has expired",
            SetupKeyFailure.Exhausted => "setup key has reached its usage limit",
            SetupKeyFailure.Revoked => "setup key was revoked",
            _ => "setup key rejected",
        }) => Reason = reason;

    public SetupKeyRejectedException()
    {
    }

    public SetupKeyRejectedException(string message)
        : base(message)
    {
    }

    public SetupKeyRejectedException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    public SetupKeyFailure Reason { get; }
}

/// <summary>A name the operator gave is held by another record already; nothing was stored.</summary>
public sealed class NameInUseException : Exception
{
    public NameInUseException()
    {
    }

    public NameInUseException(string message)
        : base(message)
    {
    }

    public NameInUseException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>The overlay network 100.64.0.0/10.</summary>
public static class OverlayNetwork
{
    public const int PrefixLength = 10;
    public const uint Network = 0x64400000;
    public const uint Broadcast = Network | 0x003FFFFF;
    public const uint FirstHost = Network + 1;
    public const uint LastHost = Broadcast - 1;

    public static IPAddress ToAddress(uint ip)
    {
        Span<byte> bytes = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(bytes, ip);
        return new IPAddress(bytes);
    }

    public static bool TryParse(string text, out uint ip)
    {
        ip = 0;
        if (!IPAddress.TryParse(text, out var address) || address.AddressFamily != System.Net.Sockets.AddressFamily.InterNetwork)
        {
            return false;
        }

        Span<byte> bytes = stackalloc byte[4];
        address.TryWriteBytes(bytes, out _);
        ip = BinaryPrimitives.ReadUInt32BigEndian(bytes);
        return true;
    }
}

/// <summary>
/// The database file could not be opened or migrated (not a database, unreadable, locked past the busy timeout).
/// An <see cref="IOException"/>, so the server and the admin commands report it as one line and exit 1.
/// </summary>
public sealed class StoreUnavailableException : IOException
{
    public StoreUnavailableException()
    {
    }

    public StoreUnavailableException(string message)
        : base(message)
    {
    }

    public StoreUnavailableException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>A peer reference matched several peers; nothing was changed.</summary>
public sealed class AmbiguousPeerException : Exception
{
    public AmbiguousPeerException()
    {
    }

    public AmbiguousPeerException(string message)
        : base(message)
    {
    }

    public AmbiguousPeerException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
