namespace Modular.Plugins.Rosenpass.Protocol;

/// <summary>What <see cref="CryptoServer.HandleMessage"/> did: the peer whose exchange it completed (a new <see cref="CryptoServer.OutputKey"/>), and how many response bytes to send back (0: none).</summary>
public readonly record struct HandleResult(int? ExchangedWith, int ResponseLength);

/// <summary>What <see cref="CryptoServer.Poll"/> asks the caller to do now.</summary>
public enum PollAction
{
    /// <summary>Nothing is due before <see cref="PollResult.Until"/>; poll again then (or after the next message).</summary>
    Sleep,

    /// <summary>Start a handshake: <see cref="CryptoServer.InitiateHandshake"/> and send the result. The caller may ignore it (e.g. when the other side is the designated initiator); it is not repeated until the next rekey.</summary>
    SendInitiation,

    /// <summary>Resend the last handshake message: <see cref="CryptoServer.RetransmitHandshake"/>.</summary>
    SendRetransmission,

    /// <summary>The peer's output key expired without a new exchange: stop using it.</summary>
    DeleteKey,
}

/// <summary>One answer of <see cref="CryptoServer.Poll"/>: an action for <see cref="Peer"/>, or sleep until <see cref="Until"/>.</summary>
public readonly record struct PollResult(PollAction Action, int Peer, DateTimeOffset Until)
{
    /// <summary>For <see cref="PollAction.Sleep"/>: how long from the poll until <see cref="Until"/> (at most an hour, also when nothing is scheduled, so it suits Task.Delay).</summary>
    public TimeSpan Wait { get; init; }

    public static PollResult SendInitiation(int peer) => new(PollAction.SendInitiation, peer, default);

    public static PollResult SendRetransmission(int peer) => new(PollAction.SendRetransmission, peer, default);

    public static PollResult DeleteKey(int peer) => new(PollAction.DeleteKey, peer, default);

    public static PollResult Sleep(DateTimeOffset until) => new(PollAction.Sleep, -1, until);
}

/// <summary>
/// The protocol's timers (upstream's constants.rs). <see cref="Default"/> holds upstream's values;
/// <see cref="ScaledBy"/> shortens them all together (tests, or a faster rotation).
/// </summary>
public sealed record CryptoServerTimings
{
    /// <summary>Upstream's values: rekey 120 s (responder) / 130 s (initiator), keys rejected after 180 s.</summary>
    public static CryptoServerTimings Default { get; } = new();

    /// <summary>A new exchange is due this long after one completed as responder.</summary>
    public TimeSpan RekeyAfterTimeResponder { get; init; } = TimeSpan.FromSeconds(120);

    /// <summary>A new exchange is due this long after one completed as initiator (later, so the two sides take turns).</summary>
    public TimeSpan RekeyAfterTimeInitiator { get; init; } = TimeSpan.FromSeconds(130);

    /// <summary>An output key is deleted, and an unfinished handshake dropped, this long after it was made.</summary>
    public TimeSpan RejectAfterTime { get; init; } = TimeSpan.FromSeconds(180);

    /// <summary>A biscuit key seals for this long, then only opens for as long again.</summary>
    public TimeSpan BiscuitEpoch { get; init; } = TimeSpan.FromSeconds(300);

    /// <summary>A cookie secret is active for this long, then only accepted for as long again.</summary>
    public TimeSpan CookieSecretEpoch { get; init; } = TimeSpan.FromSeconds(120);

    /// <summary>The first retransmission comes after 0.5-1 times this (with jitter), then doubles.</summary>
    public TimeSpan RetransmitDelayBegin { get; init; } = TimeSpan.FromSeconds(0.5);

    /// <summary>The retransmission delay stops growing at 0.5-1 times this.</summary>
    public TimeSpan RetransmitDelayEnd { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Every timer multiplied by <paramref name="factor"/> (e.g. 0.05 for a 6-second rotation).</summary>
    public CryptoServerTimings ScaledBy(double factor)
    {
        if (!(factor > 0))
        {
            throw new ArgumentOutOfRangeException(nameof(factor), factor, "The scale factor must be positive.");
        }

        return new CryptoServerTimings
        {
            RekeyAfterTimeResponder = RekeyAfterTimeResponder * factor,
            RekeyAfterTimeInitiator = RekeyAfterTimeInitiator * factor,
            RejectAfterTime = RejectAfterTime * factor,
            BiscuitEpoch = BiscuitEpoch * factor,
            CookieSecretEpoch = CookieSecretEpoch * factor,
            RetransmitDelayBegin = RetransmitDelayBegin * factor,
            RetransmitDelayEnd = RetransmitDelayEnd * factor,
        };
    }
}
