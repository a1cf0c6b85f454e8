%% A TCP proxy for the tests: listens on a loopback port and relays each
%% connection to the next of its upstreams (round robin, as an L4
%% balancer). It tells connections that come from this Erlang node (a
%% socket of this VM is their other end) from the others (a pyexecd
%% forwarding to a peer), counts the octets each kind carries, and can shut
%% this node out (refuse and drop its connections) while the others go on:
%% an address that the client cannot reach but the replicas can.
-module(pyexec_test_proxy).

-export([start/1, port/1, stats/1, block_local/2, stop/1]).

-spec start([{string(), inet:port_number()}]) -> {ok, pid()}.
start(Upstreams) ->
    Parent = self(),
    Pid = spawn(fun() -> init(Parent, Upstreams) end),
    receive {Pid, ready} -> {ok, Pid} after 5000 -> error(proxy_not_started) end.

port(Pid) -> call(Pid, port).

%% #{local => Octets, remote => Octets, local_conns => N, remote_conns => N}
stats(Pid) -> call(Pid, stats).

block_local(Pid, Block) -> call(Pid, {block_local, Block}).

stop(Pid) -> call(Pid, stop).

call(Pid, Req) ->
    Ref = erlang:monitor(process, Pid),
    Pid ! {Req, self(), Ref},
    receive
        {Ref, R} -> erlang:demonitor(Ref, [flush]), R;
        {'DOWN', Ref, _, _, Why} -> error({proxy_down, Why})
    after 5000 -> error(proxy_timeout)
    end.

init(Parent, Upstreams) ->
    {ok, L} = gen_tcp:listen(0, [binary, {ip, {127, 0, 0, 1}}, {active, false}, {reuseaddr, true},
                                 {nodelay, true}, {backlog, 128}]),
    {ok, Port} = inet:port(L),
    Self = self(),
    spawn_link(fun() -> accept(Self, L) end),
    Parent ! {self(), ready},
    loop(#{listen => L, port => Port, upstreams => Upstreams, next => 0, block => false,
           conns => #{}, local => 0, remote => 0, local_conns => 0, remote_conns => 0}).

accept(Proxy, L) ->
    case gen_tcp:accept(L) of
        {ok, S} ->
            ok = gen_tcp:controlling_process(S, Proxy),
            Proxy ! {accepted, S},
            accept(Proxy, L);
        {error, _} ->
            ok
    end.

loop(#{upstreams := Ups, next := Next, block := Block, conns := Conns} = St) ->
    receive
        {accepted, S} ->
            Local = from_this_node(S),
            case Local andalso Block of
                true ->
                    gen_tcp:close(S),
                    loop(St);
                false ->
                    Up = lists:nth(Next rem length(Ups) + 1, Ups),
                    Self = self(),
                    Pid = spawn(fun() -> relay_init(Self, Up, Local) end),
                    ok = gen_tcp:controlling_process(S, Pid),
                    Pid ! {socket, S},
                    Key = case Local of true -> local_conns; false -> remote_conns end,
                    loop(St#{next := Next + 1, conns := Conns#{Pid => Local},
                             Key := maps:get(Key, St) + 1})
            end;
        {octets, Local, N} ->
            Key = case Local of true -> local; false -> remote end,
            loop(St#{Key := maps:get(Key, St) + N});
        {closed, Pid} ->
            loop(St#{conns := maps:remove(Pid, Conns)});
        {port, From, Ref} ->
            From ! {Ref, maps:get(port, St)},
            loop(St);
        {stats, From, Ref} ->
            From ! {Ref, maps:with([local, remote, local_conns, remote_conns], St)},
            loop(St);
        {{block_local, B}, From, Ref} ->
            B andalso [exit(P, kill) || {P, true} <- maps:to_list(Conns)],
            From ! {Ref, ok},
            loop(St#{block := B});
        {stop, From, Ref} ->
            [exit(P, kill) || P <- maps:keys(Conns)],
            gen_tcp:close(maps:get(listen, St)),
            From ! {Ref, ok}
    end.

%% The connection's other end is a socket of this VM.
from_this_node(S) ->
    {ok, Peer} = inet:peername(S),
    lists:any(fun(P) ->
                      case erlang:port_info(P, name) of
                          {name, "tcp_inet"} -> inet:sockname(P) =:= {ok, Peer};
                          _ -> false
                      end
              end, erlang:ports()).

relay_init(Proxy, {Host, Port}, Local) ->
    S = receive {socket, Sock} -> Sock end,
    case gen_tcp:connect(Host, Port, [binary, {active, true}, {nodelay, true}], 5000) of
        {ok, U} ->
            ok = inet:setopts(S, [{active, true}]),
            relay(Proxy, S, U, Local);
        {error, _} ->
            gen_tcp:close(S),
            Proxy ! {closed, self()}
    end.

relay(Proxy, S, U, Local) ->
    receive
        {tcp, S, Data} ->
            Proxy ! {octets, Local, byte_size(Data)},
            ok = gen_tcp:send(U, Data),
            relay(Proxy, S, U, Local);
        {tcp, U, Data} ->
            Proxy ! {octets, Local, byte_size(Data)},
            _ = gen_tcp:send(S, Data),
            relay(Proxy, S, U, Local);
        {tcp_closed, _} ->
            gen_tcp:close(S), gen_tcp:close(U),
            Proxy ! {closed, self()};
        {tcp_error, _, _} ->
            gen_tcp:close(S), gen_tcp:close(U),
            Proxy ! {closed, self()}
    end.
