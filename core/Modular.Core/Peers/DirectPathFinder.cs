using System.Net;
using Modular.Core.Ice;

namespace Modular.Core.Peers;

/// <summary>
/// Finds a direct path to a peer: connectivity checks towards all its candidates at once, the first that answers wins
/// (the rest are cancelled). It holds no state; what was found is the caller's to use (WireGuard's endpoint, status).
/// </summary>
internal sealed class DirectPathFinder(IPeerPaths paths, PeerConnOptions options)
{
    /// <summary>How often a check is sent again while unanswered.</summary>
    private static readonly TimeSpan CheckInterval = TimeSpan.FromMilliseconds(200);

    /// <summary>Answers the peer's checks for <paramref name="local"/> while the registration is held (see <see cref="IPeerPaths.Register"/>).</summary>
    public IDisposable Register(IceCredentials local, Action<IPEndPoint, string> onValidCheck) => paths.Register(local, onValidCheck);

    /// <summary>The first target that passed checks within <see cref="PeerConnOptions.Checks"/>; null when none did.</summary>
    public async Task<CheckResult?> FindAsync(IceCredentials local, IceCredentials remote, IReadOnlyList<IPEndPoint> targets, CancellationToken cancellationToken)
    {
        if (targets.Count == 0)
        {
            return null;
        }

        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var checks = targets.Select(t => paths.CheckAsync(t, local, remote, options.Checks, CheckInterval, stop.Token)).ToList();
        CheckResult? winner = null;
        var remaining = new List<Task<CheckResult?>>(checks);
        while (remaining.Count > 0 && winner is null)
        {
            var done = await Task.WhenAny(remaining);
            remaining.Remove(done);
            winner = await done;
        }

        await stop.CancelAsync();
        try
        {
            await Task.WhenAll(checks);
        }
        catch (OperationCanceledException)
        {
        }

        return winner;
    }

    /// <summary>The WireGuard endpoint for a remote candidate that passed checks.</summary>
    public IPEndPoint WireGuardEndpointFor(IPEndPoint checkedRemote) => paths.WireGuardEndpointFor(checkedRemote);

    /// <summary>This side's candidate the peer most likely saw, for status.</summary>
    public IceCandidate? LocalCandidateFor(IceCandidate remote)
    {
        var local = paths.LocalCandidates;
        if (remote.Type != CandidateType.Host && local.FirstOrDefault(c => c.Type == CandidateType.ServerReflexive) is { } reflexive)
        {
            return reflexive;
        }

        // No host address on the peer's network: we reached it through a NAT, as our reflexive address.
        return local.FirstOrDefault(c => c.Type == CandidateType.Host && SameSlash24(c.Endpoint.Address, remote.Endpoint.Address))
               ?? local.FirstOrDefault(c => c.Type == CandidateType.ServerReflexive)
               ?? (local.Count > 0 ? local[0] : null);
    }

    private static bool SameSlash24(IPAddress a, IPAddress b)
    {
        var x = a.GetAddressBytes();
        var y = b.GetAddressBytes();
        return x.Length == 4 && y.Length == 4 && x[0] == y[0] && x[1] == y[1] && x[2] == y[2];
    }
}
