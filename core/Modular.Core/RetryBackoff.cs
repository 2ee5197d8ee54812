namespace Modular.Core;

/// <summary>
/// The retry delays of the agent's reconnect loops (management, signal, one peer's connection, a refused peer): a
/// delay that doubles after every attempt up to a cap, each waited with ±25 % jitter so agents that lost the same
/// server do not return in step. One loop owns one instance (not thread-safe). The random source is injectable so a
/// test can pin the jitter.
/// </summary>
public sealed class RetryBackoff
{
    private readonly TimeSpan _first;
    private readonly Func<double> _random;

    /// <param name="first">The first delay, and the one after <see cref="Reset"/>.</param>
    /// <param name="random">A value in [0, 1) per jitter; null: <see cref="Random.Shared"/>.</param>
    public RetryBackoff(TimeSpan first, Func<double>? random = null)
    {
        _first = first;
        _random = random ?? Random.Shared.NextDouble;
        Current = first;
    }

    /// <summary>The delay before jitter that the next <see cref="Next"/> waits.</summary>
    public TimeSpan Current { get; private set; }

    /// <summary>The delay to wait now (<see cref="Current"/> with jitter); then doubles <see cref="Current"/>, up to <paramref name="cap"/>.</summary>
    public TimeSpan Next(TimeSpan cap)
    {
        var delay = Jitter(Current, _random);
        Current = TimeSpan.FromTicks(Math.Min(Current.Ticks * 2, cap.Ticks));
        return delay;
    }

    /// <summary>An attempt succeeded: the next failure waits <c>first</c> again.</summary>
    public void Reset() => Current = _first;

    /// <summary>
    /// A session ended after <paramref name="lasted"/>: it counts as a success (<see cref="Reset"/>) only when it lasted at
    /// least <paramref name="healthy"/>. A connection that opens and breaks at once (a stream the server ends, an engine
    /// that fails right after login) must back off like one that never opened, not retry every <c>first</c>.
    /// </summary>
    public void ResetIfLasted(TimeSpan lasted, TimeSpan healthy)
    {
        if (lasted >= healthy)
        {
            Reset();
        }
    }

    /// <summary><paramref name="delay"/> spread by ±25 %.</summary>
    public static TimeSpan Jitter(TimeSpan delay, Func<double>? random = null)
        => delay * (0.75 + ((random ?? Random.Shared.NextDouble)() * 0.5));
}
