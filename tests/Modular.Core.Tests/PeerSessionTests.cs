using System.Collections.Concurrent;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Modular.Abstractions.WireGuard;
using Modular.Control.Signal;
using Modular.Core.Peers;

namespace Modular.Core.Tests;

/// <summary>The signal session on its own: which session id its notices name.</summary>
public sealed class PeerSessionTests
{
    private sealed class RecordingSignaling : IPeerSignaling
    {
        public ConcurrentQueue<SignalBody> Sent { get; } = new();

        public Task SendAsync(WgKey recipient, SignalBody body, CancellationToken cancellationToken)
        {
            Sent.Enqueue(body.Clone());
            return Task.CompletedTask;
        }
    }

    [Fact]
    public async Task A_goodbye_between_a_renewed_session_and_its_offer_names_the_session_the_peer_knows()
    {
        // The RouteTests goodbye case: an agent stopping in the pause after a failed attempt had renewed its session
        // sent a goodbye for an id the peer had never seen, and the peer, rightly, ignored it.
        var signaling = new RecordingSignaling();
        var stateLock = new Lock();
        var session = new PeerSession(new WgKey(new byte[32]), () => "b", signaling, new ScriptedPaths(), new FakeTimeProvider(), NullLogger.Instance, stateLock, () => { });
        lock (stateLock)
        {
            session.Open();
        }

        await session.SendCredentialsAsync(SignalBody.Types.Type.Offer, CancellationToken.None);
        var offered = signaling.Sent.Single().SessionId;
        Assert.Equal(offered, session.Notice(SignalBody.Types.Type.Goodbye)!.SessionId);

        session.Renew(); // the attempt failed; the next offer is not out yet
        Assert.Equal(offered, session.Notice(SignalBody.Types.Type.Goodbye)!.SessionId);
        Assert.Equal(offered, session.Notice(SignalBody.Types.Type.GoIdle)!.SessionId);

        await session.SendCredentialsAsync(SignalBody.Types.Type.Offer, CancellationToken.None);
        var renewed = signaling.Sent.Last().SessionId;
        Assert.NotEqual(offered, renewed);
        Assert.Equal(renewed, session.Notice(SignalBody.Types.Type.Goodbye)!.SessionId);
    }
}
