namespace Modular.WireGuard.Device;

/// <summary>
/// A re-armable one-shot timer on an injected <see cref="TimeProvider"/> that knows whether it is pending
/// (the protocol's timer rules depend on that).
/// </summary>
internal sealed class PeerTimer : IDisposable
{
    private readonly ITimer _timer;
    private readonly Action _expired;
    private int _pending;
    private volatile bool _disposed;

    public PeerTimer(TimeProvider time, Action expired)
    {
        _expired = expired;
        _timer = time.CreateTimer(static state => ((PeerTimer)state!).Fire(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    public bool IsPending => Volatile.Read(ref _pending) != 0;

    /// <summary>(Re)arms the timer to fire once after <paramref name="due"/>.</summary>
    public void Set(TimeSpan due)
    {
        if (_disposed)
        {
            return;
        }

        Volatile.Write(ref _pending, 1);
        _timer.Change(due < TimeSpan.Zero ? TimeSpan.Zero : due, Timeout.InfiniteTimeSpan);
    }

    public void Stop()
    {
        // Called per packet on the data path: changing an idle timer is skipped.
        if (Interlocked.Exchange(ref _pending, 0) == 0)
        {
            return;
        }

        if (!_disposed)
        {
            _timer.Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        }
    }

    public void Dispose()
    {
        _disposed = true;
        Volatile.Write(ref _pending, 0);
        _timer.Dispose();
    }

    private void Fire()
    {
        if (_disposed || Interlocked.Exchange(ref _pending, 0) == 0)
        {
            return;
        }

        _expired();
    }
}
