namespace Modular.Core.Firewall;

/// <summary>The fields that tie the fragments of one IP packet together (RFC 791, RFC 8200).</summary>
public readonly record struct FragmentKey(byte Protocol, UInt128 Source, UInt128 Destination, uint Identification);

/// <summary>
/// Later IP fragments carry no ports, so the firewall cannot judge them by the rules. Instead the verdict
/// of the first fragment (which carries the transport header) is remembered for a short while and
/// covers the rest of the same packet; a later fragment whose first fragment was not allowed (or not seen
/// yet: reordered) is dropped. Reassembly is left to the receiving stack. Bounded: when full, new first
/// fragments are not remembered (their later fragments drop) rather than evicting live entries.
/// </summary>
public sealed class FragmentTracker
{
    /// <summary>Linux keeps incomplete reassemblies for 30 s (ipfrag_time); later fragments cannot be useful after that.</summary>
    public static readonly TimeSpan Lifetime = TimeSpan.FromSeconds(30);

    private readonly Dictionary<FragmentKey, long> _allowed = [];
    private readonly Lock _lock = new();
    private readonly TimeProvider _time;
    private readonly int _capacity;
    private readonly long _lifetimeTicks;

    public FragmentTracker(TimeProvider time, int capacity = 4096)
    {
        ArgumentNullException.ThrowIfNull(time);
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        _time = time;
        _capacity = capacity;
        _lifetimeTicks = (long)(Lifetime.TotalSeconds * time.TimestampFrequency);
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

    /// <summary>Records that the first fragment of <paramref name="key"/>'s packet was allowed.</summary>
    public void AllowFirst(FragmentKey key)
    {
        var now = _time.GetTimestamp();
        lock (_lock)
        {
            if (_allowed.Count >= _capacity && !_allowed.ContainsKey(key))
            {
                RemoveExpired(now);
                if (_allowed.Count >= _capacity)
                {
                    return;
                }
            }

            _allowed[key] = now + _lifetimeTicks;
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

            _allowed.Remove(key);
            return false;
        }
    }

    private void RemoveExpired(long now)
    {
        foreach (var (key, expires) in _allowed)
        {
            if (expires <= now)
            {
                _allowed.Remove(key);
            }
        }
    }
}
