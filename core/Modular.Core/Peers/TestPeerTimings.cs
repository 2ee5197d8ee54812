using System.Globalization;

namespace Modular.Core.Peers;

/// <summary>
/// A test hook, not a setting: end-to-end tests shorten the peer connection's liveness timers (how soon a relayed peer
/// tries the direct path again, how long silence lasts before a probe) so a relay -> P2P -> relay cycle takes seconds,
/// not minutes. The daemon reads <see cref="Variable"/> only when it runs with MODULAR_TEST_HOOKS=1 and refuses to
/// start when it is set otherwise, or holds anything but the keys below with values that keep the timers' meaning
/// (a live idle peer is never called silent; a probe outlasts one WireGuard initiation retry).
/// </summary>
/// <remarks>
/// Format: comma-separated <c>key=seconds</c> (a trailing <c>s</c> is allowed), e.g. <c>keepalive=5s,silent=15s</c>.
/// Keys: <c>checks</c>, <c>recheck</c>, <c>handshake</c>, <c>keepalive</c>, <c>silent</c>, <c>probe</c> (the
/// <see cref="PeerConnOptions"/> members of the same meaning); a key left out keeps its default.
/// </remarks>
public static class TestPeerTimings
{
    /// <summary>The environment variable the daemon reads (with MODULAR_TEST_HOOKS=1 only).</summary>
    public const string Variable = "MODULAR_TEST_PEER_TIMINGS";

    /// <summary>No timer may exceed this (a typo such as a missing unit must not park a test for hours).</summary>
    private static readonly TimeSpan Longest = TimeSpan.FromMinutes(10);

    // WireGuard retries an unanswered handshake initiation every 5 s (REKEY_TIMEOUT): a wait for a handshake that
    // is not longer than that cannot tell a dead peer from one lost initiation.
    private static readonly TimeSpan InitiationRetry = TimeSpan.FromSeconds(5);

    /// <summary>
    /// <paramref name="options"/> with the timers <paramref name="spec"/> names; throws <see cref="InvalidDataException"/>
    /// naming the variable and the problem for anything else.
    /// </summary>
    public static PeerConnOptions Apply(PeerConnOptions options, string spec)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(spec);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var result = options;
        foreach (var part in spec.Split(',', StringSplitOptions.TrimEntries))
        {
            var equals = part.IndexOf('=', StringComparison.Ordinal);
            if (equals <= 0)
            {
                throw Problem($"'{part}' is not key=seconds");
            }

            var key = part[..equals].Trim();
            var value = Seconds(key, part[(equals + 1)..].Trim());
            if (!seen.Add(key))
            {
                throw Problem($"'{key}' is given twice");
            }

            result = key switch
            {
                "checks" => result with { CheckTimeout = value },
                "recheck" => result with { DirectRecheckInterval = value },
                "handshake" => result with { HandshakeTimeout = value },
                "keepalive" => result with { Keepalive = value },
                "silent" => result with { SilentPeer = value },
                "probe" => result with { SilenceProbeTimeout = value },
                _ => throw Problem($"unknown key '{key}' (known: checks, recheck, handshake, keepalive, silent, probe)"),
            };
        }

        // Between idle peers the keepalives of one side arrive every keepalive interval: silence shorter than two of
        // them would probe live peers all the time.
        if (result.Silent <= result.PersistentKeepalive * 2)
        {
            throw Problem($"silent ({result.Silent.TotalSeconds:0.###} s) must be longer than two keepalive intervals ({result.PersistentKeepalive.TotalSeconds:0.###} s each)");
        }

        if (result.SilenceProbe <= InitiationRetry || result.FirstHandshake <= InitiationRetry)
        {
            throw Problem($"probe and handshake must be longer than WireGuard's {InitiationRetry.TotalSeconds:0} s initiation retry");
        }

        return result;
    }

    private static TimeSpan Seconds(string key, string text)
    {
        var number = text.EndsWith('s') ? text[..^1] : text;
        if (!double.TryParse(number, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var seconds) || double.IsNaN(seconds))
        {
            throw Problem($"{key}: '{text}' is not a number of seconds");
        }

        // The connect loop looks once a second: a shorter timer would mean nothing.
        var value = TimeSpan.FromSeconds(seconds);
        if (value < TimeSpan.FromSeconds(1) || value > Longest)
        {
            throw Problem($"{key}: {text} is outside 1 s .. {Longest.TotalMinutes:0} min");
        }

        return value;
    }

    private static InvalidDataException Problem(string what) => new($"{Variable}: {what}");
}
