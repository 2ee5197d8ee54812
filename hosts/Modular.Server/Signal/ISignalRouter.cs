using System.Collections.Concurrent;
using Modular.Abstractions.WireGuard;
using Modular.Control.Signal;

namespace Modular.Server.Signal;

/// <summary>
/// Delivers signal messages to whichever connection (in this or, with a distributed implementation
/// such as Redis pub/sub, another server instance) holds the recipient's stream.
/// </summary>
public interface ISignalRouter
{
    /// <summary>Makes <paramref name="peer"/> reachable through <paramref name="deliver"/> (which must not block) until disposed.
    /// A newer attachment for the same peer replaces an older one.</summary>
    IDisposable Attach(WgKey peer, Func<SignalMessage, bool> deliver);

    /// <summary>Routes to <c>message.Recipient</c>; false when the recipient is not connected or cannot take more.</summary>
    ValueTask<bool> RouteAsync(SignalMessage message, CancellationToken cancellationToken);
}

/// <summary>Routing within one server process.</summary>
public sealed class InProcessSignalRouter : ISignalRouter
{
    private readonly ConcurrentDictionary<WgKey, Attachment> _peers = new();

    public IDisposable Attach(WgKey peer, Func<SignalMessage, bool> deliver)
    {
        var attachment = new Attachment(this, peer, deliver);
        _peers[peer] = attachment;
        return attachment;
    }

    public ValueTask<bool> RouteAsync(SignalMessage message, CancellationToken cancellationToken)
    {
        if (message.Recipient.Length != WgKey.Size || !_peers.TryGetValue(new WgKey(message.Recipient.Span), out var attachment))
        {
            return ValueTask.FromResult(false);
        }

        return ValueTask.FromResult(attachment.Deliver(message));
    }

    private sealed class Attachment(InProcessSignalRouter owner, WgKey peer, Func<SignalMessage, bool> deliver) : IDisposable
    {
        public Func<SignalMessage, bool> Deliver { get; } = deliver;

        public void Dispose() => owner._peers.TryRemove(new KeyValuePair<WgKey, Attachment>(peer, this));
    }
}
