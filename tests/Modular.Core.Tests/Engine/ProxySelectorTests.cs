using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Modular.Abstractions.Plugins;
using Modular.Abstractions.Proxy;
using Modular.Abstractions.WireGuard;
using Modular.Core.Engine;
using Modular.Testing;

namespace Modular.Core.Tests.Engine;

/// <summary>
/// Every choice and fallback of <see cref="ProxySelector"/>: auto per interface mode (bind then udp in userspace; udp
/// alone in kernel mode, where ebpf is never asked, whatever NB_DISABLE_EBPF_WG_PROXY says or however ebpf would
/// fare), explicit kinds, and an explicit ebpf loaded at start with no fallback. The factories are doubles that answer
/// like the real ones (bind: userspace only; ebpf: kernel only, not when disabled).
/// </summary>
public sealed class ProxySelectorTests
{
    private static readonly ProxyEnvironment Root = new(EbpfDisabled: false, IsRoot: true);
    private static readonly ProxyEnvironment EbpfOff = new(EbpfDisabled: true, IsRoot: true);

    private readonly FakeProxyFactory _bind = new("bind", WgInterfaceMode.Userspace);
    private readonly FakeProxyFactory _ebpf = new("ebpf", WgInterfaceMode.Kernel) { HonoursEbpfDisabled = true };
    private readonly FakeProxyFactory _udp = new("udp", mode: null);

    private static RecordingWgIface Userspace => new() { Mode = WgInterfaceMode.Userspace };

    private static RecordingWgIface Kernel => new() { Mode = WgInterfaceMode.Kernel };

    private ProxySelector Selector(string kind, ProxyEnvironment? environment = null, params FakeProxyFactory[] only)
    {
        var factories = (only.Length > 0 ? only : [_bind, _ebpf, _udp]).ToDictionary(f => f.Name, f => (IProxyFactory)f);
        return new ProxySelector(kind, factories, environment ?? Root, _ => new FakeContext());
    }

    [Fact]
    public async Task Auto_in_userspace_mode_picks_bind()
    {
        var selector = Selector("auto");

        Assert.Equal(["bind", "udp"], selector.Preference(Userspace));
        Assert.Equal("bind", (await selector.CreateAsync(Userspace, CancellationToken.None)).Kind);
        Assert.Equal(0, _udp.Created);
    }

    [Fact]
    public async Task Auto_in_userspace_mode_falls_back_to_udp_when_bind_declines()
    {
        _bind.Decline = "no Bind hook";

        var proxy = await Selector("auto").CreateAsync(Userspace, CancellationToken.None);

        Assert.Equal("udp", proxy.Kind);
        Assert.Equal(1, _bind.Asked);
        Assert.Equal(0, _bind.Created);
    }

    /// <summary>Kernel mode: udp, and ebpf is not even asked (README "Relay proxies": the benchmark favours udp).</summary>
    [Fact]
    public async Task Auto_in_kernel_mode_picks_udp_without_asking_ebpf()
    {
        var selector = Selector("auto");

        Assert.Equal(["udp"], selector.Preference(Kernel));
        Assert.Equal("udp", (await selector.CreateAsync(Kernel, CancellationToken.None)).Kind);
        Assert.Equal(0, _ebpf.Asked);
        Assert.Equal(0, _ebpf.Created);
        Assert.Equal(0, _bind.Asked);
    }

    /// <summary>What was the ebpf -> udp fallback: an ebpf that would fail to load changes nothing, because auto never loads it.</summary>
    [Fact]
    public async Task Auto_in_kernel_mode_ends_on_udp_for_every_peer_when_ebpf_could_not_load()
    {
        _ebpf.Throw = "verifier refused the program";
        var selector = Selector("auto");

        for (var i = 0; i < 3; i++)
        {
            Assert.Equal("udp", (await selector.CreateAsync(Kernel, CancellationToken.None)).Kind);
        }

        Assert.Equal(0, _ebpf.Asked);
        Assert.Equal(3, _udp.Created);
    }

    [Fact]
    public async Task NB_DISABLE_EBPF_WG_PROXY_leaves_auto_on_udp_without_asking_ebpf()
    {
        var selector = Selector("auto", EbpfOff);

        Assert.Equal(["udp"], selector.Preference(Kernel));
        Assert.Equal("udp", (await selector.CreateAsync(Kernel, CancellationToken.None)).Kind);
        Assert.Equal(0, _ebpf.Asked);
    }

    [Fact]
    public async Task An_explicit_kind_is_used_in_either_mode_without_trying_the_others()
    {
        var selector = Selector("udp");

        Assert.Equal(["udp"], selector.Preference(Userspace));
        Assert.Equal("udp", (await selector.CreateAsync(Userspace, CancellationToken.None)).Kind);
        Assert.Equal("udp", (await selector.CreateAsync(Kernel, CancellationToken.None)).Kind);
        Assert.Equal(0, _bind.Asked);
        Assert.Equal(0, _ebpf.Asked);
    }

    [Fact]
    public async Task An_explicit_kind_that_cannot_serve_the_interface_fails_with_its_reason_and_no_fallback()
    {
        var ex = await Assert.ThrowsAsync<InvalidOperationException>(() => Selector("bind").CreateAsync(Kernel, CancellationToken.None));

        Assert.Contains("bind: bind serves userspace only", ex.Message, StringComparison.Ordinal);
        Assert.Equal(0, _udp.Created);
    }

    [Fact]
    public async Task An_explicit_kind_whose_create_fails_is_not_replaced_by_another()
    {
        _bind.Throw = "hook already claimed";

        var ex = await Assert.ThrowsAsync<InvalidOperationException>(() => Selector("bind").CreateAsync(Userspace, CancellationToken.None));

        Assert.Equal("the bind proxy failed: hook already claimed", ex.Message);
        Assert.Equal(0, _udp.Created);
    }

    [Fact]
    public async Task An_explicit_ebpf_is_loaded_at_start_and_held_until_the_selector_is_disposed()
    {
        var selector = Selector("ebpf");

        await selector.StartAsync(Kernel, CancellationToken.None);
        Assert.Equal(1, _ebpf.Created);
        Assert.Equal(0, _ebpf.Closed);
        Assert.Equal(["ebpf"], selector.Preference(Kernel));
        Assert.Equal("ebpf", (await selector.CreateAsync(Kernel, CancellationToken.None)).Kind);

        await selector.DisposeAsync();
        Assert.Equal(1, _ebpf.Closed);
    }

    [Fact]
    public async Task An_explicit_ebpf_that_cannot_load_fails_start_with_the_reason_and_never_becomes_udp()
    {
        _ebpf.Throw = "no BPF here";
        var selector = Selector("ebpf");

        var start = await Assert.ThrowsAsync<InvalidOperationException>(() => selector.StartAsync(Kernel, CancellationToken.None));
        Assert.Equal("the eBPF proxy cannot start: no BPF here", start.Message);
        var create = await Assert.ThrowsAsync<InvalidOperationException>(() => selector.CreateAsync(Kernel, CancellationToken.None));
        Assert.Equal("the ebpf proxy failed: no BPF here", create.Message);
        Assert.Equal(0, _udp.Asked);
    }

    [Fact]
    public async Task An_explicit_ebpf_with_NB_DISABLE_EBPF_WG_PROXY_fails_start_naming_both()
    {
        var ex = await Assert.ThrowsAsync<InvalidOperationException>(() => Selector("ebpf", EbpfOff).StartAsync(Kernel, CancellationToken.None));

        Assert.Equal("the eBPF proxy cannot serve fake0: disabled by NB_DISABLE_EBPF_WG_PROXY", ex.Message);
        Assert.Equal(0, _ebpf.Created);
    }

    [Theory]
    [InlineData("auto")]
    [InlineData("udp")]
    public async Task Other_kinds_have_nothing_to_start(string kind)
    {
        await using var selector = Selector(kind);

        await selector.StartAsync(Kernel, CancellationToken.None);

        Assert.Equal(0, _ebpf.Asked);
        Assert.Equal(0, _udp.Created);
    }

    [Fact]
    public async Task A_third_party_kind_is_selected_by_name()
    {
        var third = new FakeProxyFactory("thirdparty", mode: null);

        Assert.Equal("thirdparty", (await Selector("thirdparty", null, _udp, third).CreateAsync(Kernel, CancellationToken.None)).Kind);
        Assert.Equal(0, _udp.Asked);
    }

    [Fact]
    public async Task When_nothing_can_serve_the_error_names_every_kind_tried_and_why()
    {
        _bind.Decline = "no Bind hook";

        var ex = await Assert.ThrowsAsync<InvalidOperationException>(() => Selector("auto", null, _bind, _ebpf).CreateAsync(Userspace, CancellationToken.None));

        Assert.Equal("no proxy can serve fake0: bind: no Bind hook; udp: not loaded", ex.Message);
    }

    [Fact]
    public async Task In_kernel_mode_without_the_udp_plugin_auto_fails_naming_udp_and_does_not_turn_to_ebpf()
    {
        var ex = await Assert.ThrowsAsync<InvalidOperationException>(() => Selector("auto", null, _bind, _ebpf).CreateAsync(Kernel, CancellationToken.None));

        Assert.Equal("no proxy can serve fake0: udp: not loaded", ex.Message);
        Assert.Equal(0, _ebpf.Asked);
    }

    [Fact]
    public async Task Cancellation_passes_through_and_is_not_reported_as_a_proxy_failure()
    {
        _bind.Throw = "cancel";
        using var cancelled = new CancellationTokenSource();
        await cancelled.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Selector("auto").CreateAsync(Userspace, cancelled.Token));
        Assert.Equal(0, _udp.Asked);
    }

    /// <summary>A factory that serves one mode (or any when null) and counts how it was used.</summary>
    private sealed class FakeProxyFactory(string name, WgInterfaceMode? mode) : IProxyFactory
    {
        private int _asked;
        private int _created;
        private int _closed;

        public string Name => name;

        public string Description => name;

        /// <summary>Declines every interface with this reason.</summary>
        public string? Decline { get; set; }

        /// <summary>CreateAsync throws with this message ("cancel": honours the token first).</summary>
        public string? Throw { get; set; }

        public bool HonoursEbpfDisabled { get; init; }

        public int Asked => Volatile.Read(ref _asked);

        public int Created => Volatile.Read(ref _created);

        public int Closed => Volatile.Read(ref _closed);

        public ProxyCapability CanServe(WgInterfaceMode served)
            => mode is null || mode == served ? ProxyCapability.Yes : ProxyCapability.No($"{name} serves {mode.Value.ToString().ToLowerInvariant()} only");

        public ProxyCapability CanProxy(IWgInterfaceView iface, ProxyEnvironment environment)
        {
            Interlocked.Increment(ref _asked);
            if (CanServe(iface.Mode) is { CanProxy: false } refused)
            {
                return refused;
            }

            if (HonoursEbpfDisabled && environment.EbpfDisabled)
            {
                return ProxyCapability.No("disabled by NB_DISABLE_EBPF_WG_PROXY");
            }

            return Decline is { } reason ? ProxyCapability.No(reason) : ProxyCapability.Yes;
        }

        public ValueTask<IProxy> CreateAsync(IWgInterfaceView iface, IPluginContext context, CancellationToken cancellationToken)
        {
            if (Throw == "cancel")
            {
                cancellationToken.ThrowIfCancellationRequested();
            }

            if (Throw is { } message)
            {
                throw new NotSupportedException(message);
            }

            Interlocked.Increment(ref _created);
            IProxy proxy = new KindProxy(name, () => Interlocked.Increment(ref _closed));
            return ValueTask.FromResult(proxy);
        }
    }

    private sealed class KindProxy(string kind, Action closed) : IProxy
    {
        public string Kind => kind;

        public IPEndPoint EndpointAddr => new(IPAddress.Loopback, 1);

        public event EventHandler? Disconnected
        {
            add { }
            remove { }
        }

        public ValueTask AddRelayedConnAsync(IRelayedConnection connection, WgKey remotePeer, CancellationToken cancellationToken) => ValueTask.CompletedTask;

        public void Work()
        {
        }

        public void Pause()
        {
        }

        public void RedirectAs(IPEndPoint endpoint)
        {
        }

        public ValueTask CloseAsync()
        {
            closed();
            return ValueTask.CompletedTask;
        }

        public ValueTask DisposeAsync() => CloseAsync();
    }

    private sealed class FakeContext : IPluginContext
    {
        public IReadOnlyDictionary<string, object?> Settings { get; } = new Dictionary<string, object?>();

        public Microsoft.Extensions.Logging.ILoggerFactory LoggerFactory => NullLoggerFactory.Instance;

        public TimeProvider Time => TimeProvider.System;

        public string StateDirectory => "/nonexistent";

        public IServiceProvider Services => throw new NotSupportedException();
    }
}
