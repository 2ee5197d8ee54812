using System.Net;
using System.Net.Sockets;

namespace Modular.E2E.Tests;

/// <summary>
/// The access-policy scenario both WireGuard modes are tested with: agents A and B connected under the
/// Default policy, B listening on TCP 80 and 22 and UDP 5353, then "A -> B tcp/80" as the only policy.
/// </summary>
internal sealed class WebOnlyPolicy : IDisposable
{
    private static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(90);
    private readonly MeshRig _rig;
    private readonly string[] _names;
    private readonly CancellationTokenSource _cancel = new(TimeSpan.FromMinutes(4));
    private readonly Socket _web;
    private readonly Socket _ssh;

    /// <summary>Starts A and B (kernel mode: wireguard-go), waits until they ping each other and TCP 22 answers.</summary>
    public WebOnlyPolicy(MeshRig rig, string a, string b, bool kernelMode)
    {
        _rig = rig;
        _names = [a, b];
        A = a;
        B = b;
        var key = rig.CreateSetupKey();
        foreach (var name in _names)
        {
            var agent = rig.AddAgent(name);
            agent.WriteConfig(key, "[proxy]\nkind = \"udp\"");
            if (kernelMode)
            {
                agent.UseKernelMode();
            }

            agent.Start();
        }

        rig.WaitUntil(() => rig[a].IsConnected(b) && rig[b].IsConnected(a), ConnectTimeout, $"{a} and {b} Connected", Diagnostics);
        IpA = rig[a].OverlayIp ?? throw new InvalidOperationException($"{a} has no overlay IP");
        IpB = rig[b].OverlayIp ?? throw new InvalidOperationException($"{b} has no overlay IP");
        rig.WaitUntil(() => rig[a].Ping(IpB), MeshTests.FirstPingTimeout, $"{a} -> {b} under the Default policy", Diagnostics);

        AddressB = IPAddress.Parse(IpB);
        _web = Probes.Listen(rig[b].Namespace.Name, AddressB, 80, _cancel.Token);
        _ssh = Probes.Listen(rig[b].Namespace.Name, AddressB, 22, _cancel.Token);
        Udp = NamespaceSocket.Create(rig[b].Namespace.Name, AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        Udp.Bind(new IPEndPoint(AddressB, 5353));

        // Sanity: everything is reachable while Default (All <-> All) is in force.
        Assert.True(Probes.TryTcp(rig[a].Namespace.Name, AddressB, 22, out var reply), "TCP 22 under the Default policy");
        Assert.Equal("port 22", reply);
    }

    public string A { get; }

    public string B { get; }

    public string IpA { get; }

    public string IpB { get; }

    public IPAddress AddressB { get; }

    /// <summary>B's UDP socket (port 5353): UDP is not in the policy.</summary>
    public Socket Udp { get; }

    /// <summary>Stops the probes' listeners when the test ends.</summary>
    public CancellationToken Ending => _cancel.Token;

    public string Diagnostics() => MeshTests.Diagnostics(_rig, _names);

    /// <summary>Groups A and B, the tcp/80 policy from A to B, and no Default: then waits until ping A -> B is dropped.</summary>
    public void Apply(Func<string>? moreDiagnostics = null)
    {
        _rig.ServerCli("groups create A");
        _rig.ServerCli("groups create B");
        _rig.ServerCli($"groups add-peer A {IpA}");
        _rig.ServerCli($"groups add-peer B {IpB}");
        _rig.ServerCli("policies create web --source A --destination B --protocol tcp --ports 80");
        _rig.ServerCli("policies delete Default");
        _rig.Log(_rig.ServerCli("policies list"));
        _rig.WaitUntil(() => !_rig[A].Ping(IpB, 2), TimeSpan.FromSeconds(60), $"ping {A} -> {B} dropped after the Default policy is gone",
            () => Diagnostics() + (moreDiagnostics?.Invoke() ?? ""));
    }

    /// <summary>TCP 80 A -> B connects and gets its reply; TCP 22, UDP, ping and anything B -> A are dropped.</summary>
    public void AssertOnlyTcp80FromAToB()
    {
        Assert.True(Probes.TryTcp(_rig[A].Namespace.Name, AddressB, 80, out var reply), "TCP 80 A -> B is allowed");
        Assert.Equal("port 80", reply);
        Assert.False(Probes.TryTcp(_rig[A].Namespace.Name, AddressB, 22, out _), "TCP 22 A -> B must be dropped");
        Assert.False(Probes.UdpArrives(_rig[A].Namespace.Name, Udp, AddressB), "UDP A -> B must be dropped");
        Assert.False(_rig[A].Ping(IpB, 2), "ping A -> B must be dropped");
        Assert.False(Probes.TryTcp(_rig[B].Namespace.Name, IPAddress.Parse(IpA), 22, out _), "TCP B -> A is not allowed (the policy is one-way)");
    }

    public void Dispose()
    {
        _cancel.Cancel();
        _web.Dispose();
        _ssh.Dispose();
        Udp.Dispose();
        _cancel.Dispose();
    }
}
