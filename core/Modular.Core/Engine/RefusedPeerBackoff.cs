using Grpc.Core;
using Microsoft.Extensions.Logging;

namespace Modular.Core.Engine;

/// <summary>
/// Management refuses this peer (an operator removed it from the account, or its login expired). The
/// agent keeps asking, since an operator may re-add it, but must neither hammer the server nor fill the
/// log: attempts back off exponentially with jitter from <see cref="FirstDelay"/> to <see cref="MaxDelay"/>,
/// and the error is logged on the first refusal, then at most once per <see cref="ReportEvery"/>, saying
/// what to do. Times come from the injected <see cref="TimeProvider"/>.
/// </summary>
public sealed class RefusedPeerBackoff(ILogger logger, TimeProvider time, Func<double>? random = null)
{
    public static readonly TimeSpan FirstDelay = TimeSpan.FromSeconds(5);
    public static readonly TimeSpan MaxDelay = TimeSpan.FromHours(1);
    public static readonly TimeSpan ReportEvery = TimeSpan.FromHours(1);

    // No locks: only the engine's run loop calls OnRefused / OnAccepted.
    private readonly RetryBackoff _backoff = new(FirstDelay, random);
    private DateTimeOffset? _reportedAt;

    // Also read by the signal loop: volatile.
    private volatile bool _isRefused;

    /// <summary>True from a refusal until management accepts this peer again (read by other loops, e.g. signal's).</summary>
    public bool IsRefused
    {
        get => _isRefused;
        private set => _isRefused = value;
    }

    /// <summary>The one-line problem for status and the log.</summary>
    public static string Describe(StatusCode code, string detail)
    {
        var what = code == StatusCode.NotFound
            ? "this peer was removed from the account"
            : $"management refused this peer ({detail})";
        return $"{what}; re-register it with a setup key: put a new one (not the one it registered with) in setup_key in the agent's config and restart the agent (modular down; modular up)";
    }

    /// <summary>Records one refusal; logs it when due; returns how long to wait before the next attempt.</summary>
    public TimeSpan OnRefused(StatusCode code, string detail)
    {
        IsRefused = true;
        // Capped after the jitter too: never longer than MaxDelay between two attempts.
        var delay = TimeSpan.FromTicks(Math.Min(_backoff.Next(MaxDelay).Ticks, MaxDelay.Ticks));
        var now = time.GetUtcNow();
        if (_reportedAt is not { } reported || now - reported >= ReportEvery)
        {
            _reportedAt = now;
            logger.LogError("Management: {Problem}. Tunnels to all peers are removed; asking again with backoff (up to every {Max} min), this is logged at most once an hour",
                Describe(code, detail), (int)MaxDelay.TotalMinutes);
        }
        else
        {
            logger.LogDebug("Management still refuses this peer ({Code}); next attempt in about {Seconds} s", code, (int)delay.TotalSeconds);
        }

        return delay;
    }

    /// <summary>Management accepted this peer: the next refusal is new and reported at once.</summary>
    public void OnAccepted()
    {
        if (IsRefused)
        {
            logger.LogInformation("Management accepts this peer again");
        }

        IsRefused = false;
        _backoff.Reset();
        _reportedAt = null;
    }
}
