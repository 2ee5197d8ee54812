using System.Threading.Channels;
using Modular.Core.Network;

namespace Modular.Core.Tests.Network;

/// <summary>
/// The host's network changes as a test publishes them. <see cref="WaitingAsync"/> completes when the reader has
/// taken every published event and waits for the next (the monitor arms its quiet timer before it reads, so the
/// test may advance its fake clock from there).
/// </summary>
internal sealed class InMemoryNetworkEvents(params NetworkEvent[] defaultRoutes) : INetworkEvents
{
    private readonly Channel<NetworkEvent> _queue = Channel.CreateUnbounded<NetworkEvent>();
    private readonly object _lock = new();
    private TaskCompletionSource _waiting = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public IReadOnlyList<NetworkEvent> DefaultRoutes { get; } = defaultRoutes;

    public int Read { get; private set; }

    public void Publish(params NetworkEvent[] events)
    {
        // One batch at a time: the reader never finds the queue empty half way through it.
        lock (_lock)
        {
            _waiting = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            foreach (var e in events)
            {
                _queue.Writer.TryWrite(e);
            }
        }
    }

    /// <summary>Completes once the reader asked for an event and found none queued.</summary>
    public Task WaitingAsync()
    {
        lock (_lock)
        {
            return _waiting.Task;
        }
    }

    public async ValueTask<NetworkEvent> ReadAsync(CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            if (_queue.Reader.TryRead(out var queued))
            {
                Read++;
                return queued;
            }

            _waiting.TrySetResult();
        }

        var e = await _queue.Reader.ReadAsync(cancellationToken);
        Read++;
        return e;
    }

    public void Dispose() => _queue.Writer.TryComplete();
}
