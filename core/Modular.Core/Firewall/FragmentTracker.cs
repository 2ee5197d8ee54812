namespace Modular.Core.Firewall;

/// <summary>The fields that tie the fragments of one IP packet together (RFC 791, RFC 8200).</summary>
public readonly record struct FragmentKey(byte Protocol, UInt128 Source, UInt128 Destination, uint Identification);

/// <summary>
/// Later IP fragments carry no ports, so the firewall cannot judge them by the rules. Instead the verdict
/// of the first fragment (which carries the transport header) is remembered for a short while and
/// covers the rest of the same packet; a later fragment whose first fragment was not allowed (or not seen
/// yet: reordered) is dropped. Reassembly is left to the receiving stack.
/// <para>
/// Bounded in total (<c>capacity</c>) and per source address (<see cref="PerSourceShare"/> of it), because any
/// peer can send allowed first fragments (to the mesh resolver): a source at its bound gets no more entries (its
/// later fragments drop) until its own expire; when the tracker is full, a source holding fewer entries than the
/// heaviest one takes the place of the heaviest one's entry closest to expiry, and otherwise its first fragment is
/// not remembered. So one peer's fragments can never crowd out another's or the host's.
/// </para>
/// </summary>
public sealed class FragmentTracker
{
    /// <summary>Linux keeps incomplete reassemblies for 30 s (ipfrag_time); later fragments cannot be useful after that.</summary>
    public static readonly TimeSpan Lifetime = TimeSpan.FromSeconds(30);

    /// <summary>One source address holds at most this fraction (1/n) of the tracker.</summary>
    public const int PerSourceShare = 16;

    /// <summary>How often, at most, a full tracker is swept while admitting, so a flood does not cost a full scan per packet.</summary>
    private static readonly TimeSpan PressureSweepInterval = TimeSpan.FromSeconds(1);

    // Guarded by _lock: the expiry timestamp of each remembered first fragment, and entries per source (no zeros).
    private readonly Dictionary<FragmentKey, long> _allowed = [];
    private readonly Dictionary<UInt128, int> _bySource = [];
    private readonly Lock _lock = new();
    private long _lastSweep = long.MinValue;

    // Immutable after construction.
    private readonly TimeProvider _time;
    private readonly int _capacity;
    private readonly int _perSource;
    private readonly long _lifetimeTicks;
    private readonly long _sweepTicks;

    public FragmentTracker(TimeProvider time, int capacity = 4096)
    {
        ArgumentNullException.ThrowIfNull(time);
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        _time = time;
        _capacity = capacity;
        _perSource = Math.Max(1, capacity / PerSourceShare);
        _lifetimeTicks = (long)(Lifetime.TotalSeconds * time.TimestampFrequency);
        _sweepTicks = (long)(PressureSweepInterval.TotalSeconds * time.TimestampFrequency);
    }

    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _allowed.Count;
            }
        }
    }

    /// <summary>Remembered first fragments from <paramref name="source"/>, expired ones not yet swept included.</summary>
    public int CountFrom(UInt128 source)
    {
        lock (_lock)
        {
            return _bySource.GetValueOrDefault(source);
        }
    }

    /// <summary>Records that the first fragment of <paramref name="key"/>'s packet was allowed (unless its source or the tracker is at its bound).</summary>
    public void AllowFirst(FragmentKey key)
    {
        var now = _time.GetTimestamp();
        lock (_lock)
        {
            if (_allowed.ContainsKey(key))
            {
                _allowed[key] = now + _lifetimeTicks;
                return;
            }

            if (_bySource.GetValueOrDefault(key.Source) >= _perSource || _allowed.Count >= _capacity)
            {
                SweepUnderPressure(now);
                if (_bySource.GetValueOrDefault(key.Source) >= _perSource)
                {
                    return;
                }

                if (_allowed.Count >= _capacity)
                {
                    if (FindVictim(key.Source) is not { } victim)
                    {
                        return;
                    }

                    Remove(victim);
                }
            }

            _allowed.Add(key, now + _lifetimeTicks);
            _bySource[key.Source] = _bySource.GetValueOrDefault(key.Source) + 1;
        }
    }

    /// <summary>True when a later fragment belongs to a packet whose first fragment was allowed recently.</summary>
    public bool IsAllowed(FragmentKey key)
    {
        var now = _time.GetTimestamp();
        lock (_lock)
        {
            if (!_allowed.TryGetValue(key, out var expires))
            {
                return false;
            }

            if (expires > now)
            {
                return true;
            }

            Remove(key);
            return false;
        }
    }

    /// <summary>Call with the lock held.</summary>
    private void SweepUnderPressure(long now)
    {
        if (_lastSweep != long.MinValue && now - _lastSweep < _sweepTicks)
        {
            return;
        }

        _lastSweep = now;
        foreach (var (key, expires) in _allowed)
        {
            if (expires <= now)
            {
                Remove(key);
            }
        }
    }

    /// <summary>The entry closest to expiry of the source holding the most, when that is not <paramref name="source"/> and holds more. Lock held.</summary>
    private FragmentKey? FindVictim(UInt128 source)
    {
        var heaviest = source;
        var heaviestCount = _bySource.GetValueOrDefault(source);
        foreach (var (address, count) in _bySource)
        {
            if (count > heaviestCount)
            {
                (heaviest, heaviestCount) = (address, count);
            }
        }

        if (heaviest == source)
        {
            return null;
        }

        FragmentKey? victim = null;
        var victimExpires = long.MaxValue;
        foreach (var (key, expires) in _allowed)
        {
            if (key.Source == heaviest && expires < victimExpires)
            {
                (victim, victimExpires) = (key, expires);
            }
        }

        return victim;
    }

    /// <summary>Lock held.</summary>
    private void Remove(FragmentKey key)
    {
        if (!_allowed.Remove(key))
        {
            return;
        }

        var left = _bySource[key.Source] - 1;
        if (left == 0)
        {
            _bySource.Remove(key.Source);
        }
        else
        {
            _bySource[key.Source] = left;
        }
    }
}
