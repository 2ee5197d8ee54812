namespace Modular.WireGuard.Device;

/// <summary>The protocol's time and message limits (WireGuard paper, section 6).</summary>
public static class ProtocolTimings
{
    public static readonly TimeSpan RekeyAfterTime = TimeSpan.FromSeconds(120);
    public static readonly TimeSpan RejectAfterTime = TimeSpan.FromSeconds(180);
    public static readonly TimeSpan RekeyAttemptTime = TimeSpan.FromSeconds(90);
    public static readonly TimeSpan RekeyTimeout = TimeSpan.FromSeconds(5);
    public static readonly TimeSpan KeepaliveTimeout = TimeSpan.FromSeconds(10);

    /// <summary>Most random delay added to handshake retries, so peers do not retry in lockstep.</summary>
    public static readonly TimeSpan RekeyTimeoutJitterMax = TimeSpan.FromMilliseconds(333);

    /// <summary>Keys are erased when nothing new has happened for three times <see cref="RejectAfterTime"/>.</summary>
    public static readonly TimeSpan ZeroKeysAfter = RejectAfterTime * 3;

    /// <summary>A peer accepts at most one initiation per this interval (flood guard).</summary>
    public static readonly TimeSpan HandshakeInitiationRate = TimeSpan.FromMilliseconds(20);

    public const ulong RekeyAfterMessages = 1UL << 60;
    public const ulong RejectAfterMessages = ulong.MaxValue - (1UL << 13);

    /// <summary>How many initiations are retried before giving up (REKEY_ATTEMPT_TIME / REKEY_TIMEOUT).</summary>
    public const int MaxHandshakeAttempts = 18;

    /// <summary>How many packets wait for a session per peer before the oldest are dropped.</summary>
    public const int MaxStagedPackets = 128;
}
